use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The current [`Manifest::format`].
pub const MANIFEST_FORMAT: u32 = 1;

/// What a clean produced, written as `manifest.json` next to the table files.
///
/// Deterministic: maps are ordered, there are no timestamps, so the same zip gives the same
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version of this manifest ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// Hex SHA-256 of the zip that was cleaned.
    pub source_sha256: String,
    /// One entry per table of [`crate::TABLES`], keyed by table name.
    pub tables: BTreeMap<String, TableOutput>,
    /// One entry per CSV file read, keyed by entry name (`movies_metadata.csv`).
    pub files: BTreeMap<String, FileStats>,
    /// The rejects file.
    pub rejects: RejectsOutput,
    /// Zip entries that are not one of the required files, sorted (not an error).
    pub ignored_entries: Vec<String>,
}

/// A table's file and its row count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOutput {
    /// File name inside the output folder (`movies.tsv`).
    pub file: String,
    /// Number of rows in the file.
    pub rows: u64,
    /// Where the file can be cut into ranges of its key (the first column: `user_id` for the
    /// ratings tables), in file order: recorded only when every row came in non-decreasing key
    /// order, so all rows before a cut have a smaller key than `key` and all rows from it on at
    /// least `key`. About one per 32 MiB; empty for other tables, small files and files not in
    /// key order. The load uses them to load and index key ranges separately.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cuts: Vec<Cut>,
}

/// A row start in a key-ordered table file (see [`TableOutput::cuts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    /// Byte offset of the row in the file.
    pub offset: u64,
    /// Rows before it.
    pub rows: u64,
    /// Its key: greater than every key before, no greater than any after.
    pub key: i64,
}

/// Counts for one CSV file of the archive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStats {
    /// Data records read (the header not counted).
    pub records: u64,
    /// Records accepted; `records == accepted + rejected total`.
    pub accepted: u64,
    /// Rejected records per reason code (see [`crate::RejectReason`]); zero counts are left out.
    pub rejected: BTreeMap<String, u64>,
    /// Values written as NULL because they could not be parsed, per source column name; zero
    /// counts are left out.
    pub unparsable: BTreeMap<String, u64>,
}

impl FileStats {
    /// Sum of the rejected counts.
    pub fn total_rejected(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Sum of the unparsable counts.
    pub fn total_unparsable(&self) -> u64 {
        self.unparsable.values().sum()
    }
}

/// The rejects file and its row count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectsOutput {
    /// File name inside the output folder (`rejects.tsv`).
    pub file: String,
    /// Number of rejected records written.
    pub rows: u64,
}

impl Manifest {
    /// Rejected records over all files.
    pub fn total_rejected(&self) -> u64 {
        self.files.values().map(FileStats::total_rejected).sum()
    }

    /// Rejected records per reason code, summed over all files.
    pub fn rejected_by_reason(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for stats in self.files.values() {
            for (reason, n) in &stats.rejected {
                *out.entry(reason.clone()).or_insert(0) += n;
            }
        }
        out
    }

    /// Records read over all files.
    pub fn total_records(&self) -> u64 {
        self.files.values().map(|f| f.records).sum()
    }

    /// Rows written over all tables.
    pub fn total_rows(&self) -> u64 {
        self.tables.values().map(|t| t.rows).sum()
    }

    /// Row count of one table, if it is in the manifest.
    pub fn table_rows(&self, table: &str) -> Option<u64> {
        self.tables.get(table).map(|t| t.rows)
    }
}
