//! Kill test: the runner syncs a directory of Parquet files into an Elasticsearch index
//! (full sync, with a version) and is SIGKILLed at random moments, at least 10 times,
//! each time restarted from its checkpoints, against the real OpenSearch in `ES_URL`
//! (`testing/services/opensearch.sh`). In the end the index equals the input: the same
//! ids, fields and version, nothing missing, nothing extra.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use operators_testkit::es::TestEs;
use serde_json::{Value, json};
use support::kill::{Ends, KillLoop, Kills, concat_args, once_source_args, restartable_args, seeded_rng};
use support::{run_off_runtime, write_parquet};

const KILLS: usize = 12;
const FILES: i64 = 4;
const ROWS_PER_FILE: i64 = 5_000;
const VERSION: i64 = 1_586_959_594;

/// Writes the input files; returns id → the document expected in the index.
fn write_input(dir: &std::path::Path) -> BTreeMap<String, Value> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let mut expected = BTreeMap::new();
    for f in 0..FILES {
        let ids: Vec<i64> = (0..ROWS_PER_FILE).map(|i| f * ROWS_PER_FILE + i).collect();
        let names: Vec<Option<String>> =
            ids.iter().map(|id| (id % 97 != 0).then(|| format!("name-{id}-\u{4e2d}"))).collect();
        let scores: Vec<f64> = ids.iter().map(|id| *id as f64 * 0.25).collect();
        for ((id, name), score) in ids.iter().zip(&names).zip(&scores) {
            expected.insert(id.to_string(), json!({"id": id, "name": name, "score": score, "version": VERSION}));
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
                Arc::new(Float64Array::from(scores)),
            ],
        )
        .unwrap();
        // Several row groups per file: a kill can land inside a file.
        let groups: Vec<RecordBatch> =
            (0..ROWS_PER_FILE as usize).step_by(1000).map(|s| batch.slice(s, 1000)).collect();
        write_parquet(&dir.join(format!("part-{f}.parquet")), &groups);
    }
    expected
}

/// The index as id → document with explicit nulls, for comparison with the input.
fn normalised(docs: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    docs.into_iter()
        .map(|(id, mut source)| {
            if source.get("name").is_none() {
                source["name"] = Value::Null;
            }
            (id, source)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_leaves_an_index_equal_to_the_input() {
    let es = TestEs::start().await.unwrap();
    let (user, password) = es.credentials().cloned().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let expected = write_input(&input);
    let index = es.index("kill");
    let ck = tmp.path().join("ck");
    let mut rng = seeded_rng(None);
    let args = concat_args(&[
        &["--job.name", "kill-es"],
        &once_source_args("parquet", input.to_str().unwrap(), "0"),
        &[
            "--source.batch.size",
            "250",
            "--stream.rate.limit",
            "800",
            "--sink.type",
            "es",
            "--sink.es.server",
            es.servers(),
            "--sink.es.index",
            &index,
            "--sink.es.username",
            &user,
            "--sink.es.password",
            &password,
            "--sink.es.type",
            "parquet",
            "--sink.es.sync.type",
            "full",
            "--sink.es.unique.column",
            "id",
            "--sink.es.version",
            "1586959594",
            "--sink.es.bulk.flush.max.actions",
            "300",
            "--sink.es.bulk.flush.backoff.delay",
            "50",
        ],
        &restartable_args(None, "200", ck.to_str().unwrap()),
    ]);
    let kill_loop =
        KillLoop { cwd: tmp.path(), args: &args, delays_ms: 800..2200, kills: KILLS, ends: Ends::MustNotFinish };
    let Kills { midway, .. } = kill_loop
        .run_off_runtime(&mut rng, async |kill: usize, delay: Duration| {
            let docs = es.documents(&index).await.unwrap();
            // Whatever is there at any moment is input, as the input says.
            for (id, source) in &docs {
                let want = expected.get(id).unwrap_or_else(|| panic!("kill {kill}: document {id} is not in the input"));
                let mut got = source.clone();
                if got.get("name").is_none() {
                    got["name"] = Value::Null;
                }
                assert_eq!(&got, want, "kill {kill}: document {id}");
            }
            eprintln!("kill {kill}: after {delay:?}, {} of {} documents", docs.len(), expected.len());
            if std::env::var("KILL_LOGS").is_ok() {
                eprintln!(
                    "{}",
                    std::fs::read_to_string(tmp.path().join(format!("run-{kill}.log"))).unwrap_or_default()
                );
            }
            !docs.is_empty() && docs.len() < expected.len()
        })
        .await;
    assert!(midway >= KILLS / 2, "most kills hit a job with a partial index ({midway})");

    // A last run, unkilled: it finishes by itself (PROCESS_ONCE).
    let out = run_off_runtime(tmp.path(), &args).await;
    assert!(out.status.success(), "the last run failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let got = normalised(es.documents(&index).await.unwrap());
    assert_eq!(got.len(), expected.len(), "no missing or extra documents");
    assert_eq!(got, expected, "the index equals the input: ids, fields and version");
    es.delete_index(&index).await.unwrap();
}
