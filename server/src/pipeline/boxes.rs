//! Parsing InternVL grounding output: `<ref>label</ref><box>[[x1,y1,x2,y2],...]</box>`.
//!
//! In zero-shot mode these boxes are the only localisation the model gives, and they come from
//! free generation that may be cut at the token cap or drift from the format. So the parser is
//! lenient about layout and strict about numbers: whatever complete, well-formed box is in the
//! text is kept, and anything else is skipped rather than failing the whole answer.

use serde::Serialize;

/// InternVL's grounding coordinates are integers on a 0–1000 grid over each image axis.
pub const COORD_MAX: f32 = 1000.0;

/// A box in InternVL's 0–1000 normalised coordinates, with `x1 < x2` and `y1 < y2`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionBox {
    /// The `<ref>` phrase that introduced the box, if any.
    pub label: Option<String>,
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl RegionBox {
    /// The box in pixels of a `width × height` image, as `[x1, y1, x2, y2]`.
    pub fn to_pixels(&self, width: u32, height: u32) -> [f32; 4] {
        let (w, h) = (width as f32 / COORD_MAX, height as f32 / COORD_MAX);
        [self.x1 * w, self.y1 * h, self.x2 * w, self.y2 * h]
    }

    /// The pixels the box covers in a `width × height` image, as `[x1, y1, x2, y2]`: inclusive
    /// top-left, exclusive bottom-right, never empty, never outside the image. Every place that
    /// turns a box into pixels (the wire's `RegionBox`, a region's mask) uses this one rounding, so
    /// a mask and its box always agree.
    pub fn pixel_bounds(&self, width: u32, height: u32) -> [u32; 4] {
        let [x1, y1, x2, y2] = self.to_pixels(width, height);
        let lo = |v: f32, max: u32| (v.floor().max(0.0) as u32).min(max.saturating_sub(1));
        let hi = |v: f32, low: u32, max: u32| (v.ceil().max(0.0) as u32).clamp(low + 1, max.max(1));
        let (px1, py1) = (lo(x1, width), lo(y1, height));
        [px1, py1, hi(x2, px1, width), hi(y2, py1, height)]
    }
}

/// Extracts every complete, well-formed box from model output, in order of appearance.
///
/// Within each `<box>` every innermost `[a, b, c, d]` with four finite numbers is a box; groups
/// with other counts or non-numbers are skipped, and an unfinished group at the end of a cut
/// generation is ignored. A `<box>` takes its label from a `<ref>` directly before it (only
/// whitespace between). Coordinates are clamped to 0–1000, reversed corners are swapped, and
/// boxes with no area are dropped.
pub fn parse_boxes(text: &str) -> Vec<RegionBox> {
    const OPEN: &str = "<box>";
    let mut boxes = Vec::new();
    let mut cursor = 0;
    while let Some(found) = text[cursor..].find(OPEN) {
        let open_at = cursor + found;
        let content_start = open_at + OPEN.len();
        // A box ends at its closing tag, or, when the closing tag never came, where the next tag
        // starts, so one unterminated box cannot swallow the boxes after it.
        let content_end = ["</box>", "<box>", "<ref>"]
            .iter()
            .filter_map(|tag| text[content_start..].find(tag))
            .min()
            .map_or(text.len(), |i| content_start + i);
        let label = label_before(&text[cursor..open_at]);
        boxes.extend(
            complete_groups(&text[content_start..content_end])
                .filter_map(parse_group)
                .filter_map(|coords| normalise(coords, label.clone())),
        );
        cursor = content_end;
    }
    boxes
}

/// The label of a `<ref>…</ref>` that ends `prefix` (trailing whitespace allowed).
fn label_before(prefix: &str) -> Option<String> {
    let head = prefix.trim_end().strip_suffix("</ref>")?;
    let label = head[head.rfind("<ref>")? + "<ref>".len()..].trim();
    (!label.is_empty()).then(|| label.to_string())
}

/// The text of every bracket group that contains no other bracket and is closed.
fn complete_groups(content: &str) -> impl Iterator<Item = &str> {
    // Each piece after a '[' up to the next ']' is innermost exactly when no '[' intervenes,
    // which splitting on '[' guarantees; a piece without ']' is an outer or unclosed group.
    content
        .split('[')
        .skip(1)
        .filter_map(|piece| piece.split_once(']').map(|(inner, _)| inner))
}

fn parse_group(group: &str) -> Option<[f32; 4]> {
    let mut coords = [0.0f32; 4];
    let mut parts = group.split(',');
    for slot in &mut coords {
        let value: f32 = parts.next()?.trim().parse().ok()?;
        if !value.is_finite() {
            return None;
        }
        *slot = value;
    }
    parts.next().is_none().then_some(coords)
}

fn normalise([a, b, c, d]: [f32; 4], label: Option<String>) -> Option<RegionBox> {
    let clamp = |v: f32| v.clamp(0.0, COORD_MAX);
    let (x1, x2) = (clamp(a.min(c)), clamp(a.max(c)));
    let (y1, y2) = (clamp(b.min(d)), clamp(b.max(d)));
    (x2 > x1 && y2 > y1).then_some(RegionBox {
        label,
        x1,
        y1,
        x2,
        y2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb(label: Option<&str>, x1: f32, y1: f32, x2: f32, y2: f32) -> RegionBox {
        RegionBox {
            label: label.map(str::to_string),
            x1,
            y1,
            x2,
            y2,
        }
    }

    #[test]
    fn single_labelled_box() {
        let boxes = parse_boxes("The <ref>left hand</ref><box>[[12,30,240,400]]</box> is odd.");
        assert_eq!(boxes, vec![rb(Some("left hand"), 12.0, 30.0, 240.0, 400.0)]);
    }

    #[test]
    fn several_boxes_in_one_tag_share_the_label() {
        let boxes = parse_boxes("<ref>eyes</ref><box>[[10,10,20,20],[30,10,40,20]]</box>");
        assert_eq!(
            boxes,
            vec![
                rb(Some("eyes"), 10.0, 10.0, 20.0, 20.0),
                rb(Some("eyes"), 30.0, 10.0, 40.0, 20.0)
            ]
        );
    }

    #[test]
    fn several_pairs_keep_their_own_labels() {
        let text = "<ref>a</ref><box>[[1,2,3,4]]</box>, <ref>b</ref> <box>[[5,6,7,8]]</box>";
        let boxes = parse_boxes(text);
        assert_eq!(
            boxes,
            vec![
                rb(Some("a"), 1.0, 2.0, 3.0, 4.0),
                rb(Some("b"), 5.0, 6.0, 7.0, 8.0)
            ]
        );
    }

    #[test]
    fn boxes_without_ref_have_no_label_and_labels_do_not_carry_over() {
        let boxes = parse_boxes("<ref>a</ref><box>[[1,2,3,4]]</box> and <box>[[5,6,7,8]]</box>");
        assert_eq!(boxes[1], rb(None, 5.0, 6.0, 7.0, 8.0));
        assert_eq!(parse_boxes("<box>[[5,6,7,8]]</box>")[0].label, None);
        // A ref separated from the box by words does not label it.
        assert_eq!(
            parse_boxes("<ref>a</ref> is at <box>[[5,6,7,8]]</box>")[0].label,
            None
        );
        // An empty ref is no label.
        assert_eq!(
            parse_boxes("<ref>  </ref><box>[[5,6,7,8]]</box>")[0].label,
            None
        );
    }

    #[test]
    fn whitespace_newlines_and_floats() {
        let text = "<ref> the cup </ref>\n<box> [ [ 12.5 , 30 ,\n 240.25, 400 ] ] </box>";
        assert_eq!(
            parse_boxes(text),
            vec![rb(Some("the cup"), 12.5, 30.0, 240.25, 400.0)]
        );
    }

    #[test]
    fn single_bracket_form_is_accepted() {
        assert_eq!(
            parse_boxes("<box>[1,2,3,4]</box>"),
            vec![rb(None, 1.0, 2.0, 3.0, 4.0)]
        );
    }

    #[test]
    fn generation_cut_inside_a_box() {
        assert!(parse_boxes("<ref>hand</ref><box>[[12,30,").is_empty());
        assert!(parse_boxes("<ref>hand</ref><box>[[12,30,40,50").is_empty());
        let boxes = parse_boxes("<box>[[1,2,3,4],[5,6,");
        assert_eq!(boxes, vec![rb(None, 1.0, 2.0, 3.0, 4.0)]);
        // Closed groups without the closing tag still count.
        assert_eq!(parse_boxes("<box>[[1,2,3,4]]").len(), 1);
    }

    #[test]
    fn unterminated_box_does_not_swallow_the_next_one() {
        let boxes = parse_boxes("<box>[[1,2,3,4]] <ref>b</ref><box>[[5,6,7,8]]</box>");
        assert_eq!(
            boxes,
            vec![
                rb(None, 1.0, 2.0, 3.0, 4.0),
                rb(Some("b"), 5.0, 6.0, 7.0, 8.0)
            ]
        );
    }

    #[test]
    fn malformed_groups_are_skipped_and_good_ones_kept() {
        let text = "<box>[[1,2,3]]</box><box>[[a,2,3,4]]</box><box>[[1,2,3,4,5]]</box>\
                    <box>[[NaN,2,3,4],[inf,1,2,3],[1,,3,4]]</box><box>[[10,20,30,40]]</box>";
        assert_eq!(parse_boxes(text), vec![rb(None, 10.0, 20.0, 30.0, 40.0)]);
    }

    #[test]
    fn reversed_corners_are_swapped() {
        assert_eq!(
            parse_boxes("<box>[[300,400,100,200]]</box>"),
            vec![rb(None, 100.0, 200.0, 300.0, 400.0)]
        );
    }

    #[test]
    fn coordinates_are_clamped() {
        let boxes = parse_boxes("<box>[[-5,10,1200,900]]</box>");
        assert_eq!(boxes, vec![rb(None, 0.0, 10.0, 1000.0, 900.0)]);
    }

    #[test]
    fn zero_area_boxes_are_dropped() {
        let text = "<box>[[5,5,5,50],[5,5,50,5],[1100,0,1200,50],[-9,0,-1,9],[1,1,2,2]]</box>";
        assert_eq!(parse_boxes(text), vec![rb(None, 1.0, 1.0, 2.0, 2.0)]);
    }

    #[test]
    fn text_without_box_tags_gives_nothing() {
        assert!(parse_boxes("").is_empty());
        assert!(parse_boxes("The hand [12,30,240,400] looks wrong.").is_empty());
        assert!(parse_boxes("<ref>hand</ref> only").is_empty());
    }

    #[test]
    fn to_pixels_scales_each_axis() {
        let b = rb(None, 100.0, 250.0, 500.0, 1000.0);
        assert_eq!(b.to_pixels(640, 480), [64.0, 120.0, 320.0, 480.0]);
    }

    #[test]
    fn serialises_to_json() {
        let json = serde_json::to_string(&rb(Some("hand"), 1.0, 2.0, 3.5, 4.0)).unwrap();
        assert_eq!(
            json,
            r#"{"label":"hand","x1":1.0,"y1":2.0,"x2":3.5,"y2":4.0}"#
        );
    }
}
