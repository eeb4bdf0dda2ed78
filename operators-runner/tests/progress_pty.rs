//! The progress bar, checked without a screenshot: the runner runs under a pseudo-
//! terminal (`script`), so it detects a terminal and draws the bar; the captured output
//! must show the bar advancing to 100 %. Without a terminal no bar is drawn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::kill::{concat_args, once_source_args};
use support::{operator, write_csv_input};

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn percents(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("%)") {
        let digits: String = text[..i].chars().rev().take_while(char::is_ascii_digit).collect();
        if let Ok(p) = digits.chars().rev().collect::<String>().parse() {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_bar_advances_to_100_percent_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_csv_input(&input, 8, 20_000, false);
    let out_dir = tmp.path().join("out");
    let args = concat_args(&[
        &once_source_args("csv", input.to_str().unwrap(), "20"),
        &[
            "--source.batch.size",
            "2000",
            "--stream.rate.limit",
            "80000",
            "--sink.type",
            "file",
            "--sink.path",
            out_dir.to_str().unwrap(),
            "--progress",
            "auto",
        ],
    ]);
    let command = std::iter::once(env!("CARGO_BIN_EXE_operator").to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(tmp.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("`script` (util-linux) runs the runner under a pseudo-terminal");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let seen = percents(&text);
    assert!(seen.len() >= 3, "the bar was drawn several times: {seen:?}\n{text}");
    assert!(seen.iter().any(|p| *p > 0 && *p < 100), "the bar advanced through the middle: {seen:?}");
    assert_eq!(seen.last(), Some(&100), "the bar ends at 100%: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "the bar never goes back: {seen:?}");
    assert!(text.contains("summary: rows in 160000"), "{text}");

    // Without a terminal: no bar.
    let out2 = tmp.path().join("out2");
    let mut plain_args = args.to_vec();
    let at = plain_args.len() - 3;
    plain_args[at] = out2.to_str().unwrap();
    let plain = operator(tmp.path()).args(plain_args).output().unwrap();
    assert!(plain.status.success());
    assert!(percents(&String::from_utf8_lossy(&plain.stderr)).is_empty());
}
