//! Kill test: the runner reads a CSV directory into the file sink in EXACTLY_ONCE mode
//! and is SIGKILLed at random moments, 25 times, each time restarted from its
//! checkpoints. The committed output must equal the input row for row: no duplicates,
//! no gaps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[test]
fn sigkill_at_random_moments_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = support::kill::Spec {
        name: "kill-csv",
        // About 11 000 rows a run at this rate: 25 kills reached 268 000 of the 600 000
        // input rows here, so the input outlasts them about 2 times over (at 40 000/s
        // they reached 510 000, too close to running out before the 20 kills required).
        rate: 25_000,
        interval_ms: 100,
        delays_ms: 200..1000,
        kills: 25,
    };
    support::kill::csv_to_files(tmp.path(), tmp.path(), &spec);
}
