//! Exactly-once part files: JSON lines, CSV or Parquet.
//!
//! Each subtask writes a part file under a hidden in-progress name
//! (`.part-<run>-<subtask>-<n>.<ext>.inprogress`). A part is closed when it reaches the
//! roll size or age, and at every checkpoint barrier; closed parts are fsynced and listed
//! in the checkpoint as the sink's committable. Only when that checkpoint is complete are
//! they renamed to their final names (`part-<run>-<subtask>-<n>.<ext>`), so readers of the
//! directory never see records of a checkpoint that may still be rolled back.
//!
//! After a crash, the parts listed in the restored checkpoint are renamed (a part already
//! renamed before the crash is left alone), and in-progress files of earlier runs that no
//! checkpoint references — records that will be replayed — are deleted once the first
//! checkpoint of the new run completes. One job per output directory.
//!
//! The directory may be on any registered file system ([`operators_core::fs`]): on HDFS
//! (`hdfs://namenode:port/dir`) a part is durable when its close completes it, and the
//! commit is HDFS's atomic rename.

mod config;
mod sink;
#[cfg(test)]
mod tests;

pub use config::FileFormat;
pub use sink::FileSink;
