//! Storage of cityward: the event lake and its SQL engine, and retention. The lake holds
//! every accepted event as Parquet, partitioned Hive-style by kind and UTC day
//! (`kind=gps/day=2026-11-22/seg-….parquet`), written from sealed write-ahead-log segments
//! idempotently, so that a crash between writing the lake and deleting the WAL segment
//! never loses or duplicates a row; `_manifest.json` records how far the WAL is compacted.
//! [`SqlEngine`] answers read-only SQL over the table `events` — the lake `UNION ALL` the
//! events still only in the WAL — with DataFusion, pruning by partition, statistics, page
//! index and Bloom filters. [`RetentionPolicy`] deletes whole expired day partitions per
//! data class and keeps a deletion log. The state store ([`StateStore`]) keeps the node's
//! shared, mutable state (city model, devices, rules, alerts, users, audit log) in an
//! embedded SQLite file ([`SqliteState`]) or in a PostgreSQL schema that several nodes can
//! share ([`PgState`]).
//!
//! This crate must not decide what is durable (the WAL acknowledges), must not change or
//! delete data through SQL, and knows nothing of HTTP: errors carry a [`Status`] that the
//! server maps to a response.
#![deny(missing_docs)]

mod error;
mod lake;
mod retention;
mod sql;
mod state;
mod wal;

pub use error::{Result, Status, StoreError};
pub use lake::{
    check_kinds, events_schema, events_to_batch, time_type, KindStats, Lake, LakeFile, LakeOptions,
    LakeStats, MergeReport, MergedPartition, WriteReport, WrittenFile, ATTRS_COLUMN, DAY_COLUMN,
    ID_COLUMN, KIND_COLUMN, RESERVED_COLUMNS, SOURCE_COLUMN, TIME_COLUMN,
};
pub use retention::{
    AppliedRule, ExpiredPartition, HeldPartition, LegalHold, RegionRetention, RetentionLogEntry, RetentionPolicy, RetentionReport, RETENTION_LOG,
};
pub use sql::{QueryResult, SqlConfig, SqlEngine, EVENTS_TABLE};
pub use state::{
    AlertFilter, AlertRow, AuditBreak, AuditEntry, AuditHead, AuditStart, AuditVerdict, AUDIT_PRUNE_ACTION, NewAuditEntry, SearchApproval, verify_audit, DeadLetter, Delivery, DeliveryAttempt, NewDelivery, DeadLetterChannel, DeadLetterFilter, DeadLetterInsert, DeviceRow,
    FeatureRow, Layer, NewDeadLetter, Page, PageRequest, PgState, RoutingVersion, RulePut, RuleRow, SessionRow, SqliteState,
    StateError, StateOptions, StateStore, UnitRow, UserRow, DEFAULT_PAGE_LIMIT, MAX_ID_LEN,
    MAX_PAGE_LIMIT,
};
#[cfg(any(test, feature = "testsuite"))]
pub use state::conformance_suite;
pub use wal::{
    AppendAck, CorruptionPolicy, RecoveryReport, SegmentInfo, SegmentReader, SegmentRecords, SkippedRange,
    TornTail, Wal, WalConfig, WalCursor, WalError, WalReader, WalStats, WalWriter, WriterState,
    DEFAULT_MAX_RECORD_BYTES, DEFAULT_QUEUE_BYTES, DEFAULT_SEGMENT_BYTES,
};
