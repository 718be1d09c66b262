//! The data readers: TFRecord framing and checksums, RichHF-18K `tf.train.Example`s, Expl-AIGI-Eval
//! JSONL, the plain folder, and feature shards.

use std::path::Path;

use heie_server::data::richhf::{Example, RichHfRecord};
use heie_server::data::tfrecord::{crc32c, masked_crc32c, TfRecordError, TfRecordReader, TfRecordWriter};
use heie_server::data::{self, DataFormat, DataSpec};
use heie_server::training::shards::{self, FeatureSample, SampleMeta};
use ndarray::Array2;
use prost::Message;

fn png_gray(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    // The CRC-32C check value of "123456789" (RFC 3720, appendix B.4).
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(b""), 0);
    // Masking: rotate right by 15, add 0xa282ead8.
    assert_eq!(masked_crc32c(b"123456789"), 0xE306_9283u32.rotate_right(15).wrapping_add(0xA282_EAD8));
}

fn write_records(records: &[&[u8]]) -> Vec<u8> {
    let mut w = TfRecordWriter::new(Vec::new());
    for r in records {
        w.write(r).unwrap();
    }
    w.into_inner()
}

#[test]
fn tfrecords_written_by_the_test_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.tfrecord");
    let records: [&[u8]; 3] = [b"first", b"", &[7u8; 1000]];
    std::fs::write(&path, write_records(&records)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // Payloads of 5, 0 and 1000 bytes, and 16 bytes of framing per record.
    assert_eq!(bytes.len(), 5 + 1000 + 3 * 16);
    let read: Vec<Vec<u8>> = TfRecordReader::new(std::fs::File::open(&path).unwrap()).map(|r| r.unwrap()).collect();
    assert_eq!(read, records.iter().map(|r| r.to_vec()).collect::<Vec<_>>());
}

#[test]
fn corrupted_checksums_and_truncation_fail_cleanly() {
    let good = write_records(&[b"alpha", b"beta"]);
    // Second record starts at 16 + 5 = 21; its length CRC is bytes 29..33, its data CRC the last 4.
    let mut bad_len_crc = good.clone();
    bad_len_crc[29] ^= 0x01;
    let results: Vec<_> = TfRecordReader::new(&bad_len_crc[..]).collect();
    assert_eq!(results.len(), 2, "the reader stops after the error");
    assert_eq!(results[0].as_ref().unwrap(), b"alpha");
    match &results[1] {
        Err(TfRecordError::Checksum { index: 1, offset: 21, what: "length", .. }) => {}
        other => panic!("expected a length checksum error, got {other:?}"),
    }

    let mut bad_data = good.clone();
    bad_data[21 + 12] ^= 0x20; // a data byte of the second record
    let err = TfRecordReader::new(&bad_data[..]).nth(1).unwrap().unwrap_err();
    assert!(matches!(err, TfRecordError::Checksum { what: "data", .. }), "{err}");
    assert!(err.to_string().contains("record 1 at byte 21"), "{err}");

    let mut bad_data_crc = good.clone();
    let n = bad_data_crc.len();
    bad_data_crc[n - 1] ^= 0xFF;
    assert!(matches!(TfRecordReader::new(&bad_data_crc[..]).nth(1).unwrap(), Err(TfRecordError::Checksum { what: "data", .. })));

    // Cut inside the header, inside the data, and inside the footer.
    for cut in [21 + 5, 21 + 14, n - 2] {
        let err = TfRecordReader::new(&good[..cut]).nth(1).unwrap().unwrap_err();
        assert!(matches!(err, TfRecordError::Truncated { index: 1, .. }), "cut at {cut}: {err}");
    }
    // A length beyond the limit (with a valid length CRC) is refused before allocating.
    let len = (1u64 << 40).to_le_bytes();
    let mut huge = len.to_vec();
    huge.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    assert!(matches!(TfRecordReader::new(&huge[..]).next().unwrap(), Err(TfRecordError::TooLarge { .. })));
}

fn richhf_example(name: &str, score: f32, map: Vec<u8>) -> Vec<u8> {
    Example::default()
        .with_bytes("filename", name.as_bytes().to_vec())
        .with_float("artifact_score", score)
        .with_float("misalignment_score", 0.25)
        .with_float("aesthetics_score", 0.5)
        .with_float("overall_score", 0.75)
        .with_bytes("artifact_map", map)
        .with_bytes("misalignment_map", png_gray(4, 4, |_, _| 0))
        .with_bytes("prompt_misalignment_label", b"0 1 0".to_vec())
        .encode_to_vec()
}

#[test]
fn richhf_records_decode_into_samples() {
    let map = png_gray(8, 8, |x, y| if x < 4 && y < 2 { 255 } else if x == 7 { 51 } else { 0 });
    let bytes = richhf_example("abc123.jpg", 0.6, map);
    let r = RichHfRecord::decode(&bytes).unwrap();
    assert_eq!(r.filename, "abc123.jpg");
    assert_eq!((r.artifact_score, r.misalignment_score, r.aesthetics_score, r.overall_score), (Some(0.6), Some(0.25), Some(0.5), Some(0.75)));
    assert_eq!(r.prompt_misalignment_label.as_deref(), Some("0 1 0"));
    let h = r.artifact_heatmap().unwrap().unwrap();
    assert_eq!(h.dim(), (8, 8));
    assert_eq!((h[[0, 0]], h[[1, 3]], h[[2, 0]], h[[5, 7]]), (1.0, 1.0, 0.0, 0.2));

    // Whole-file path: a .tfrecord with two records, images under another folder.
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("test.tfrecord");
    let second = richhf_example("sub/def.png", 0.9, png_gray(2, 2, |_, _| 0));
    std::fs::write(&tf, write_records(&[&bytes, &second])).unwrap();
    let spec = DataSpec::new(&tf, None, Some(Path::new("/pics"))).unwrap();
    assert_eq!(spec.format, DataFormat::Richhf);
    let samples: Vec<_> = data::open(&spec).unwrap().map(|s| s.unwrap()).collect();
    assert_eq!(samples.len(), 2);
    assert_eq!((samples[0].id.as_str(), samples[0].image.as_path()), ("abc123", Path::new("/pics/abc123.jpg")));
    assert_eq!((samples[1].id.as_str(), samples[1].score), ("def", Some(0.9)));

    // A record without a filename and bytes that are not a proto fail with a message.
    let nameless = Example::default().with_float("artifact_score", 0.1).encode_to_vec();
    assert!(RichHfRecord::decode(&nameless).unwrap_err().to_string().contains("filename"));
    assert!(RichHfRecord::decode(&[0xFF, 0xFF, 0xFF]).is_err());
}

#[test]
fn expl_aigi_jsonl_fixture_parses_with_reference_cot() {
    let jsonl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/expl-aigi-eval/RichHF-18K_test.jsonl");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let first = text.lines().next().unwrap();
    let e = data::expl_aigi::parse_line(first, Path::new("/data")).unwrap();
    assert!(e.image.starts_with("/data") && e.image.to_string_lossy().ends_with(&format!("{}.jpg", e.id)));
    assert_eq!(e.heatmap.as_deref(), Some(Path::new(&format!("/data/artifact_map/{}.png", e.id))));
    let cot = e.reference_cot.unwrap();
    assert!(cot.starts_with("### Image Description"), "{cot}");
    assert!(cot.contains("[MAP]") && cot.contains("[SCORE]"));
    let score = e.score.unwrap();
    assert!((0.0..=1.0).contains(&score));
    assert_eq!(text.lines().filter(|l| !l.trim().is_empty()).count(), 955);

    // Through the dataset API: heatmap files under the root are read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("artifact_map")).unwrap();
    std::fs::write(dir.path().join("artifact_map").join(format!("{}.png", e.id)), png_gray(3, 2, |x, _| (x * 100) as u8)).unwrap();
    let one = dir.path().join("one.jsonl");
    std::fs::write(&one, format!("{first}\n\n")).unwrap();
    let samples: Vec<_> = data::open(&DataSpec::new(&one, None, Some(dir.path())).unwrap()).unwrap().collect();
    assert_eq!(samples.len(), 1);
    let s = samples.into_iter().next().unwrap().unwrap();
    assert_eq!(s.heatmap.unwrap().row(0).to_vec(), vec![0.0, 100.0 / 255.0, 200.0 / 255.0]);
    // A heatmap file that is not there is an error, not a silently unlabelled sample.
    std::fs::remove_dir_all(dir.path().join("artifact_map")).unwrap();
    assert!(data::open(&DataSpec::new(&one, None, Some(dir.path())).unwrap()).unwrap().next().unwrap().is_err());
    // A broken line names the file and line.
    std::fs::write(&one, "{\"id\": 1}\n").unwrap();
    let err = data::open(&DataSpec::new(&one, None, None).unwrap()).unwrap().next().unwrap().unwrap_err();
    assert!(err.to_string().contains("one.jsonl:1"), "{err}");
}

#[test]
fn plain_folder_reads_images_heatmaps_scores_and_16_bit_maps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    image::RgbImage::new(4, 4).save(d.join("b.png")).unwrap();
    image::RgbImage::new(4, 4).save(d.join("a.jpg")).unwrap();
    std::fs::write(d.join("a.heatmap.png"), png_gray(4, 4, |x, _| if x == 0 { 255 } else { 0 })).unwrap();
    let sixteen = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(2, 1, |x, _| image::Luma([x as u16 * 65535]));
    sixteen.save(d.join("b.heatmap.png")).unwrap();
    std::fs::write(d.join("scores.csv"), "id,score\na,0.25\nb, 1\n").unwrap();
    std::fs::write(d.join("notes.txt"), "ignored").unwrap();
    let spec = DataSpec::new(d, None, None).unwrap();
    assert_eq!(spec.format, DataFormat::Folder);
    let samples: Vec<_> = data::open(&spec).unwrap().map(|s| s.unwrap()).collect();
    let ids: Vec<_> = samples.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!((samples[0].score, samples[1].score), (Some(0.25), Some(1.0)));
    assert_eq!(samples[0].heatmap.as_ref().unwrap().column(0).sum(), 4.0);
    assert_eq!(samples[1].heatmap.as_ref().unwrap().row(0).to_vec(), vec![0.0, 1.0]);

    std::fs::write(d.join("scores.csv"), "id,score\na,zero\n").unwrap();
    let err = data::open(&spec).err().unwrap();
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(DataSpec::new(&d.join("missing.tfrecord"), None, None).is_err());
    assert!(DataSpec::new(&d.join("x.csv"), None, None).is_err());
}

fn feature_sample(id: &str, cols: usize, rows: usize, w: usize, t: usize, with_map: bool) -> FeatureSample {
    let views = cols * rows + usize::from(cols * rows > 1);
    let ramp = |n: usize, k: f32| (0..n).map(|i| ((i as f32 * 0.37 + k).sin() * 4.0).round() / 4.0).collect::<Vec<f32>>();
    FeatureSample {
        meta: SampleMeta {
            id: id.into(),
            grid_cols: cols,
            grid_rows: rows,
            has_thumbnail: views > cols * rows,
            width: 100,
            height: 50,
            score: with_map.then_some(0.5),
            has_heatmap: with_map,
        },
        features: shards::to_f16(&ramp(views * t * w, 1.0)),
        map_hidden: shards::to_f16(&ramp(views * w, 2.0)),
        score_hidden: shards::to_f16(&ramp(w, 3.0)),
        heatmap: with_map.then(|| Array2::from_shape_fn((5, 10), |(y, x)| if x > y { 1.0 } else { 0.25 })),
    }
}

#[test]
fn feature_shards_round_trip_and_index_for_resuming() {
    let dir = tempfile::tempdir().unwrap();
    let (w, t) = (6, 4);
    let samples = vec![feature_sample("x", 1, 1, w, t, true), feature_sample("y", 3, 2, w, t, false)];
    let path = dir.path().join(shards::shard_name(0));
    shards::write_shard(&path, w, t, &samples).unwrap();
    let (meta, back) = shards::read_shard(&path).unwrap();
    assert_eq!((meta.llm_width, meta.tokens_per_tile), (w, t));
    // Values that f16 represents exactly come back unchanged.
    assert_eq!(back, samples);
    assert_eq!(back[1].n_views(), 7);

    shards::write_shard(&dir.path().join(shards::shard_name(3)), w, t, &[feature_sample("z", 1, 1, w, t, true)]).unwrap();
    let idx = shards::index(dir.path()).unwrap();
    assert_eq!(idx.next_shard, 4);
    assert_eq!(idx.ids.len(), 3);
    assert!(idx.ids.contains("z"));
    assert_eq!(idx.shape, Some((w, t)));

    // A shard of another model width is refused when indexing; a wrong-length sample when writing.
    shards::write_shard(&dir.path().join(shards::shard_name(5)), w + 2, t, &[feature_sample("q", 1, 1, w + 2, t, false)]).unwrap();
    assert!(shards::index(dir.path()).unwrap_err().to_string().contains("differ"));
    let mut broken = feature_sample("b", 1, 1, w, t, false);
    broken.score_hidden.pop();
    assert!(shards::write_shard(&dir.path().join("bad.safetensors"), w, t, &[broken]).unwrap_err().to_string().contains("score_hidden"));
    // A file that is not a shard.
    std::fs::write(dir.path().join(shards::shard_name(9)), b"garbage").unwrap();
    assert!(shards::read_shard(&dir.path().join(shards::shard_name(9))).is_err());
}
