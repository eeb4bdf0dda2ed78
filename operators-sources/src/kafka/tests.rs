//! Unit tests of the Kafka source's pieces that need no broker.

use super::source::{StartOffsets, owner};

#[test]
fn partitions_spread_evenly_and_stably() {
    for parallelism in 1..5 {
        let mut counts = vec![0; parallelism];
        for p in 0..12 {
            counts[owner("events", p, parallelism)] += 1;
        }
        assert!(counts.iter().all(|c| *c == 12 / parallelism || *c == 12 / parallelism + 1), "{counts:?}");
    }
    assert_eq!(owner("t", 3, 4), owner("t", 3, 4));
}

#[test]
fn start_offsets_parse() {
    assert_eq!("EARLIEST".parse::<StartOffsets>().ok(), Some(StartOffsets::Earliest));
    assert_eq!("latest".parse::<StartOffsets>().ok(), Some(StartOffsets::Latest));
    assert!("sometime".parse::<StartOffsets>().is_err());
}
