//! The deterministic held-out split: the same labelled folders always give the same train and
//! held-out parts, so a calibration's reported numbers can be reproduced.

/// Every `HELD_OUT_EVERY`-th example of each label, by file name, is held out.
pub const HELD_OUT_EVERY: usize = 4;

/// Indices of the `(train, held_out)` parts of examples named `names` with labels `kept`: within each
/// label, sorted by name, positions 3, 7, 11, … are held out (stratified: both parts keep the
/// label balance).
pub fn held_out_split(names: &[String], kept: &[bool]) -> (Vec<usize>, Vec<usize>) {
    let (mut train, mut held_out) = (Vec::new(), Vec::new());
    for label in [true, false] {
        let mut of_label: Vec<usize> = (0..names.len()).filter(|&i| kept[i] == label).collect();
        of_label.sort_by(|&a, &b| names[a].cmp(&names[b]).then(a.cmp(&b)));
        for (position, i) in of_label.into_iter().enumerate() {
            if position % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 {
                held_out.push(i);
            } else {
                train.push(i);
            }
        }
    }
    train.sort_unstable();
    held_out.sort_unstable();
    (train, held_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fourth_of_each_label_by_name_is_held_out() {
        let names: Vec<String> = ["k3", "r1", "k1", "k4", "r2", "k2", "r3", "r4", "k5"].iter().map(|s| s.to_string()).collect();
        let kept: Vec<bool> = names.iter().map(|n| n.starts_with('k')).collect();
        let (train, held_out) = held_out_split(&names, &kept);
        let held: Vec<&str> = held_out.iter().map(|&i| names[i].as_str()).collect();
        assert_eq!(held, ["k4", "r4"]);
        assert_eq!(train.len(), 7);
        assert_eq!(held_out_split(&names, &kept), (train, held_out), "deterministic");
    }
}
