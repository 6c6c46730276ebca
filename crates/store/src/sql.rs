//! Read-only SQL over the events: the lake's Parquet files and the events still only in
//! the WAL, as one table `events`.
//!
//! `events` is a view: the lake (a DataFusion `ListingTable` over the lake directory, with
//! the Hive partition columns `kind` and `day`) `UNION ALL` the WAL tail the caller passes
//! in. Filters on `kind` and `day` skip whole directories; filters on `source`, `id`,
//! `plate` and `time` skip row groups and pages by their statistics and Bloom filters.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use cityward_model::Event;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::config::TableParquetOptions;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::MemTable;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, StoreError};
use crate::lake::schema::{align_batch, try_events_to_batch, DAY_COLUMN, KIND_COLUMN};
use crate::lake::manifest::Manifest;
use crate::lake::{Lake, PARQUET_EXT};

/// Name of the SQL table holding all events.
pub const EVENTS_TABLE: &str = "events";

/// Settings of the SQL engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// Memory one query may use for sorts, joins and aggregations before it fails with an
    /// "add filters" message. Default 512 MiB.
    pub memory_limit_bytes: u64,
    /// Threads one query may use; 0 means one per CPU core. Default 0.
    pub threads: usize,
    /// Memory for the Parquet footers and page indexes of lake files, kept between
    /// queries; a query reads again those of files that did not fit. Default 256 MiB.
    pub metadata_cache_bytes: u64,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig { memory_limit_bytes: 512 << 20, threads: 0, metadata_cache_bytes: 256 << 20 }
    }
}

/// The answer to a query, as the HTTP API and the CLI return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows as JSON values: numbers, strings, booleans, null; timestamps as RFC 3339 UTC
    /// strings (`2026-11-22T03:00:00.250Z`), dates as `YYYY-MM-DD`.
    pub rows: Vec<Vec<Value>>,
    /// True when the query had more rows than `max_rows` and only the first were kept.
    pub truncated: bool,
}

/// Runs read-only SQL over the lake and the WAL tail.
///
/// Cheap to share (`Arc`) and to call concurrently: each query gets its own DataFusion
/// session over a shared runtime (memory pool, Parquet footer cache). The file listing is
/// not cached, so files written by compaction are seen by the next query.
#[derive(Debug)]
pub struct SqlEngine {
    dir: PathBuf,
    schema: SchemaRef,
    table_schema: SchemaRef,
    listing: ListingTableConfig,
    session: SessionConfig,
    runtime: Arc<RuntimeEnv>,
    files_lock: Arc<tokio::sync::RwLock<()>>,
    manifest: Arc<std::sync::Mutex<Manifest>>,
    read_only: bool,
}

impl SqlEngine {
    /// An engine over `lake` with default [`SqlConfig`].
    pub fn new(lake: &Lake) -> Result<SqlEngine> {
        SqlEngine::with_config(lake, &SqlConfig::default())
    }

    /// An engine over `lake`.
    pub fn with_config(lake: &Lake, config: &SqlConfig) -> Result<SqlEngine> {
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(threads)
            .with_batch_size(8192);
        {
            let parquet = &mut session.options_mut().execution.parquet;
            parquet.pushdown_filters = true;
            parquet.reorder_filters = true;
            parquet.enable_page_index = true;
            parquet.bloom_filter_on_read = true;
            parquet.pruning = true;
        }
        let runtime = RuntimeEnvBuilder::new()
            // A cached listing would hide files compaction writes later.
            .with_cache_manager(
                CacheManagerConfig::default()
                    .with_list_files_cache_limit(0)
                    .with_metadata_cache_limit(config.metadata_cache_bytes as usize),
            )
            .with_memory_limit(config.memory_limit_bytes.max(16 << 20) as usize, 1.0)
            .build_arc()
            .map_err(|e| StoreError::Query { message: e.strip_backtrace() })?;

        let url = ListingTableUrl::parse(format!("{}/", lake.dir.display())).map_err(|e| StoreError::Query {
            message: format!("the lake directory `{}` cannot be read as a table: {}", lake.dir.display(), e.strip_backtrace()),
        })?;
        let format = ParquetFormat::default().with_options(TableParquetOptions {
            global: session.options().execution.parquet.clone(),
            ..Default::default()
        });
        let options = ListingOptions::new(Arc::new(format))
            .with_file_extension(PARQUET_EXT)
            .with_table_partition_cols(vec![
                (KIND_COLUMN.to_string(), DataType::Utf8),
                (DAY_COLUMN.to_string(), DataType::Date32),
            ]);
        let listing = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(lake.file_schema.clone());

        let mut fields: Vec<Field> = lake.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DAY_COLUMN, DataType::Date32, false));
        Ok(SqlEngine {
            dir: lake.dir.clone(),
            schema: lake.schema.clone(),
            table_schema: Arc::new(Schema::new(fields)),
            listing,
            session,
            runtime,
            files_lock: lake.files_lock.clone(),
            manifest: lake.manifest.clone(),
            read_only: lake.is_read_only(),
        })
    }

    /// The events schema: what [`SqlEngine::tail_batch`] produces and WAL tail batches
    /// should have (extra columns are dropped, missing ones become null).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The columns of the SQL table `events`: the events schema and `day` (Date32, the
    /// UTC day of `time`).
    pub fn table_schema(&self) -> SchemaRef {
        self.table_schema.clone()
    }

    /// Converts events still only in the WAL into a batch for [`SqlEngine::query`].
    pub fn tail_batch(&self, events: &[Event]) -> Result<RecordBatch> {
        try_events_to_batch(events, &self.schema)
    }

    /// Bytes of Parquet footers and page indexes kept between queries (at most
    /// [`SqlConfig::metadata_cache_bytes`]), and how many files they are of.
    pub fn metadata_cache_used(&self) -> (u64, usize) {
        let entries = self.runtime.cache_manager.get_file_metadata_cache().list_entries();
        (entries.values().map(|e| e.size_bytes as u64).sum(), entries.len())
    }

    /// Runs one read-only statement and returns at most `max_rows` rows as JSON values.
    ///
    /// `wal_tail` holds the events that are in the WAL but not yet in the lake (sequence
    /// numbers above [`Lake::compacted_through`]), as batches of [`SqlEngine::schema`].
    /// Only queries are allowed (`SELECT`, `WITH`, `EXPLAIN`, `DESCRIBE`, `SHOW`); anything
    /// that would create, change or configure fails with [`StoreError::ReadOnly`]. SQL
    /// mistakes fail with [`StoreError::Sql`] carrying DataFusion's message.
    ///
    /// When the tail comes from a live WAL, prefer [`SqlEngine::query_with_tail`], which
    /// reads it under the same snapshot as the lake.
    pub async fn query(&self, sql: &str, wal_tail: Vec<RecordBatch>, max_rows: usize) -> Result<QueryResult> {
        let (columns, batches) = self.run(sql, wal_tail, Some(max_rows.saturating_add(1))).await?;
        let (rows, truncated) = batches_to_rows(&batches, max_rows)?;
        Ok(QueryResult { columns, rows, truncated })
    }

    /// [`SqlEngine::query`] over a consistent snapshot: the engine fixes the lake's
    /// compacted sequence number, calls `read_tail` with it to get the events with higher
    /// sequence numbers (those still only in the WAL), and runs the query before the lake
    /// may change. Use this rather than reading the tail first and then calling `query`,
    /// which double counts a segment that compaction moves in between.
    ///
    /// `read_tail(None)` means nothing is compacted yet: every WAL event is in the tail.
    /// It runs on the calling task and may block briefly on reading the WAL.
    pub async fn query_with_tail<F, E>(&self, sql: &str, max_rows: usize, read_tail: F) -> Result<QueryResult>
    where
        F: FnOnce(Option<u64>) -> std::result::Result<Vec<Event>, E>,
        E: std::fmt::Display,
    {
        self.query_with_tail_where(sql, max_rows, None, read_tail).await
    }

    /// [`SqlEngine::query_with_tail`] over only the events for which the SQL condition
    /// `rows_where` holds: the query's `events` table holds no others, whatever it asks
    /// (the full table is not reachable by any name).
    pub async fn query_with_tail_where<F, E>(&self, sql: &str, max_rows: usize, rows_where: Option<&str>, read_tail: F) -> Result<QueryResult>
    where
        F: FnOnce(Option<u64>) -> std::result::Result<Vec<Event>, E>,
        E: std::fmt::Display,
    {
        let _shared = self.files_lock.read().await;
        let through = if self.read_only {
            // Another process owns the lake: read what it last recorded.
            Manifest::load(&self.dir)?.compacted_through_seq
        } else {
            self.manifest.lock().expect("manifest lock").compacted_through_seq
        };
        let events = read_tail(through).map_err(|e| StoreError::Tail { message: e.to_string() })?;
        let tail = if events.is_empty() { Vec::new() } else { vec![self.tail_batch(&events)?] };
        let (columns, batches) = self.run_locked(sql, tail, Some(max_rows.saturating_add(1)), rows_where).await?;
        let (rows, truncated) = batches_to_rows(&batches, max_rows)?;
        Ok(QueryResult { columns, rows, truncated })
    }

    /// [`SqlEngine::query`] with the WAL tail given as events.
    pub async fn query_events(&self, sql: &str, wal_tail: &[Event], max_rows: usize) -> Result<QueryResult> {
        let tail = if wal_tail.is_empty() { Vec::new() } else { vec![self.tail_batch(wal_tail)?] };
        self.query(sql, tail, max_rows).await
    }

    /// Runs one read-only statement and returns its result as Arrow batches, with at most
    /// `limit` rows when given (for the CLI, exports and tests).
    pub async fn query_batches(
        &self,
        sql: &str,
        wal_tail: Vec<RecordBatch>,
        limit: Option<usize>,
    ) -> Result<Vec<RecordBatch>> {
        Ok(self.run(sql, wal_tail, limit).await?.1)
    }

    async fn run(&self, sql: &str, wal_tail: Vec<RecordBatch>, limit: Option<usize>) -> Result<(Vec<String>, Vec<RecordBatch>)> {
        // Compaction, merges and retention switch files only while no query holds this.
        let _shared = self.files_lock.read().await;
        self.run_locked(sql, wal_tail, limit, None).await
    }

    /// [`SqlEngine::run`] for a caller that holds the files lock.
    async fn run_locked(
        &self,
        sql: &str,
        wal_tail: Vec<RecordBatch>,
        limit: Option<usize>,
        rows_where: Option<&str>,
    ) -> Result<(Vec<String>, Vec<RecordBatch>)> {
        let df = self.dataframe(sql, wal_tail, limit, rows_where).await?;
        let columns = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        let batches = df.collect().await.map_err(StoreError::from_query)?;
        Ok((columns, batches))
    }

    /// Plans `sql` against a fresh session holding `events`.
    async fn dataframe(&self, sql: &str, wal_tail: Vec<RecordBatch>, limit: Option<usize>, rows_where: Option<&str>) -> Result<DataFrame> {
        let ctx = self.context(wal_tail, rows_where)?;
        let plan = match ctx.state().create_logical_plan(sql).await {
            Ok(plan) => plan,
            Err(e) => {
                return Err(match write_keyword(sql) {
                    Some(keyword) => StoreError::ReadOnly {
                        statement: preview(sql),
                        reason: format!("{keyword} statements change data or settings"),
                    },
                    None => StoreError::from_query(e),
                })
            }
        };
        let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        if let Err(e) = read_only.verify_plan(&plan) {
            return Err(StoreError::ReadOnly { statement: preview(sql), reason: e.message().into_owned() });
        }
        let limitable = !matches!(
            plan,
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
        );
        let df = ctx.execute_logical_plan(plan).await.map_err(StoreError::from_query)?;
        match limit {
            Some(n) if limitable => df.limit(0, Some(n)).map_err(StoreError::from_query),
            _ => Ok(df),
        }
    }

    /// A session with the table `events` = lake UNION ALL the WAL tail (only the rows for
    /// which `rows_where` holds, when given).
    fn context(&self, wal_tail: Vec<RecordBatch>, rows_where: Option<&str>) -> Result<SessionContext> {
        let internal = |e: datafusion::error::DataFusionError| StoreError::Query {
            message: format!("could not open the lake at `{}` as a table: {}", self.dir.display(), e.strip_backtrace()),
        };
        let ctx = SessionContext::new_with_config_rt(self.session.clone(), self.runtime.clone());
        let lake = ListingTable::try_new(self.listing.clone()).map_err(internal)?;
        let names: Vec<&str> = self.table_schema.fields().iter().map(|f| f.name().as_str()).collect();
        let mut events = ctx.read_table(Arc::new(lake)).and_then(|df| df.select_columns(&names)).map_err(internal)?;
        let tail: Vec<RecordBatch> = wal_tail
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| align_batch(b, &self.table_schema))
            .collect::<Result<_>>()?;
        if !tail.is_empty() {
            let table = MemTable::try_new(self.table_schema.clone(), vec![tail]).map_err(internal)?;
            let tail = ctx.read_table(Arc::new(table)).map_err(internal)?;
            events = events.union(tail).map_err(internal)?;
        }
        if let Some(condition) = rows_where {
            let predicate = events.parse_sql_expr(condition).map_err(internal)?;
            events = events.filter(predicate).map_err(internal)?;
        }
        ctx.register_table(EVENTS_TABLE, events.into_view()).map_err(internal)?;
        Ok(ctx)
    }

    /// The physical plan of `sql`, for tests that inspect pruning.
    #[cfg(test)]
    pub(crate) async fn physical_plan(
        &self,
        sql: &str,
        wal_tail: Vec<RecordBatch>,
    ) -> Result<(Arc<dyn datafusion::physical_plan::ExecutionPlan>, Arc<datafusion::execution::TaskContext>)> {
        let df = self.dataframe(sql, wal_tail, None, None).await?;
        let task = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await.map_err(StoreError::from_query)?;
        Ok((plan, task))
    }
}

/// The first keyword of a statement when it is one that writes or configures.
fn write_keyword(sql: &str) -> Option<String> {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase();
    const WRITES: [&str; 17] = [
        "INSERT", "UPDATE", "DELETE", "MERGE", "CREATE", "DROP", "ALTER", "TRUNCATE", "COPY", "SET",
        "RESET", "PREPARE", "EXECUTE", "DEALLOCATE", "GRANT", "REVOKE", "ATTACH",
    ];
    WRITES.contains(&word.as_str()).then_some(word)
}

fn preview(sql: &str) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// Turns batches into at most `max_rows` JSON rows; says whether rows were left out.
fn batches_to_rows(batches: &[RecordBatch], max_rows: usize) -> Result<(Vec<Vec<Value>>, bool)> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(total.min(max_rows));
    for batch in batches {
        let room = max_rows - rows.len();
        if room == 0 {
            break;
        }
        let batch = batch.slice(0, batch.num_rows().min(room));
        let start = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(batch.num_columns())));
        for column in batch.columns() {
            for (row, value) in rows[start..].iter_mut().zip(column_to_json(column)?) {
                row.push(value);
            }
        }
    }
    Ok((rows, total > max_rows))
}

fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Formats microseconds since the epoch like the wire format: RFC 3339, UTC, `Z`, with
/// milliseconds (or microseconds when the value has them).
fn format_micros(micros: i64) -> Value {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) => {
            let precision = if micros % 1000 == 0 { SecondsFormat::Millis } else { SecondsFormat::Micros };
            Value::String(t.to_rfc3339_opts(precision, true))
        }
        None => Value::Null,
    }
}

fn cast_to(array: &ArrayRef, ty: &DataType) -> Result<ArrayRef> {
    cast(array, ty).map_err(StoreError::arrow(format!("converting a {} result column to JSON", array.data_type())))
}

/// One column of a result as JSON values.
fn column_to_json(array: &ArrayRef) -> Result<Vec<Value>> {
    fn collect<A: Array + 'static, F: Fn(&A, usize) -> Value>(array: &ArrayRef, f: F) -> Vec<Value> {
        let a = array.as_any().downcast_ref::<A>().expect("cast to the matching array type");
        (0..a.len()).map(|i| if a.is_null(i) { Value::Null } else { f(a, i) }).collect()
    }
    use DataType::*;
    Ok(match array.data_type() {
        Null => vec![Value::Null; array.len()],
        Boolean => collect::<BooleanArray, _>(array, |a, i| Value::Bool(a.value(i))),
        Int8 | Int16 | Int32 | Int64 => {
            collect::<Int64Array, _>(&cast_to(array, &Int64)?, |a, i| Value::from(a.value(i)))
        }
        UInt8 | UInt16 | UInt32 | UInt64 => {
            collect::<UInt64Array, _>(&cast_to(array, &UInt64)?, |a, i| Value::from(a.value(i)))
        }
        Float16 | Float32 | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => {
            collect::<Float64Array, _>(&cast_to(array, &Float64)?, |a, i| number(a.value(i)))
        }
        Utf8 => collect::<StringArray, _>(array, |a, i| Value::String(a.value(i).to_string())),
        LargeUtf8 | Utf8View => {
            collect::<StringArray, _>(&cast_to(array, &Utf8)?, |a, i| Value::String(a.value(i).to_string()))
        }
        Timestamp(_, _) => collect::<TimestampMicrosecondArray, _>(
            &cast_to(array, &Timestamp(TimeUnit::Microsecond, None))?,
            |a, i| format_micros(a.value(i)),
        ),
        Date32 | Date64 => collect::<Date32Array, _>(&cast_to(array, &Date32)?, |a, i| {
            a.value_as_date(i).map_or(Value::Null, |d| Value::String(d.format("%Y-%m-%d").to_string()))
        }),
        Dictionary(_, value_type) => column_to_json(&cast_to(array, value_type)?)?,
        _ => {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)
                .map_err(StoreError::arrow("formatting a result column"))?;
            (0..array.len())
                .map(|i| if array.is_null(i) { Value::Null } else { Value::String(formatter.value(i).to_string()) })
                .collect()
        }
    })
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::tests::sample_events;
    use crate::lake::LakeOptions;
    use crate::Status;
    use cityward_model::{parse_time, AttrSpec, AttrType, KindRegistry};
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::physical_plan::metrics::MetricValue;
    use datafusion::physical_plan::ExecutionPlan;
    use serde_json::json;

    fn lake_with(options: LakeOptions) -> (tempfile::TempDir, Lake) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open_with(dir.path(), &KindRegistry::builtin(), options).unwrap();
        (dir, lake)
    }

    fn count(result: &QueryResult) -> i64 {
        result.rows[0][0].as_i64().unwrap()
    }

    /// Files the scans of a plan will read, and the (total, matched) row groups after
    /// statistics pruning once the plan ran.
    fn scans(plan: &Arc<dyn ExecutionPlan>, files: &mut usize, groups: &mut (usize, usize)) {
        if let Some(exec) = plan.downcast_ref::<DataSourceExec>() {
            if let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() {
                *files += config.file_groups.iter().map(|g| g.len()).sum::<usize>();
            }
            if let Some(metrics) = exec.metrics() {
                for metric in metrics.iter() {
                    if let MetricValue::PruningMetrics { name, pruning_metrics } = metric.value() {
                        if name.as_ref() == "row_groups_pruned_statistics" {
                            groups.0 += pruning_metrics.pruned() + pruning_metrics.matched();
                            groups.1 += pruning_metrics.matched();
                        }
                    }
                }
            }
        }
        for child in plan.children() {
            scans(child, files, groups);
        }
    }

    #[tokio::test]
    async fn events_is_the_lake_plus_the_wal_tail() {
        let (_dir, lake) = lake_with(LakeOptions::default());
        let compacted = sample_events(1, 900);
        lake.write_segment(1, &compacted).unwrap();
        let tail = sample_events(2, 90);
        let engine = SqlEngine::new(&lake).unwrap();

        let all = engine.query_events("SELECT count(*) FROM events", &tail, 10).await.unwrap();
        assert_eq!(count(&all), 990);
        let lake_only = engine.query("SELECT count(*) FROM events", vec![], 10).await.unwrap();
        assert_eq!(count(&lake_only), 900);

        let by_kind = engine
            .query_events("SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind", &tail, 10)
            .await
            .unwrap();
        assert_eq!(by_kind.columns, vec!["kind", "n"]);
        assert_eq!(
            by_kind.rows,
            vec![vec![json!("gps"), json!(330)], vec![json!("plate_read"), json!(330)], vec![json!("smoke"), json!(330)]]
        );

        // One row from the tail, one from the lake, each with every column.
        let tail_id = &tail[4].id;
        let lake_id = &compacted[4].id;
        let rows = engine
            .query_events(
                &format!("SELECT * FROM events WHERE id IN ('{tail_id}', '{lake_id}') ORDER BY id"),
                &tail,
                10,
            )
            .await
            .unwrap();
        assert_eq!(rows.rows.len(), 2);
        assert_eq!(rows.columns.iter().filter(|c| *c == "kind").count(), 1, "one kind column: {:?}", rows.columns);
        assert_eq!(&rows.columns[..4], &["id", "source", "kind", "time"]);
        assert_eq!(rows.columns.last().map(String::as_str), Some("day"));
        let column = |name: &str| rows.columns.iter().position(|c| c == name).unwrap();
        for (row, event) in rows.rows.iter().zip([&compacted[4], &tail[4]]) {
            assert_eq!(row[column("id")], json!(event.id));
            assert_eq!(row[column("kind")], json!(event.kind));
            assert_eq!(row[column("time")], json!(cityward_model::format_time(&event.time)));
            assert_eq!(row[column("day")], json!(event.time.date_naive().to_string()));
            assert_eq!(row[column("grid")], json!(event.grid));
            let attrs: Value = serde_json::from_str(row[column("attrs")].as_str().unwrap()).unwrap();
            assert_eq!(attrs, Value::Object(event.attrs.clone()));
            assert_eq!(row[column("plate")], event.attrs.get("plate").cloned().unwrap_or(Value::Null));
        }
    }

    #[tokio::test]
    async fn partition_filters_prune_directories() {
        let (_dir, lake) = lake_with(LakeOptions::default());
        lake.write_segment(1, &sample_events(3, 600)).unwrap();
        lake.write_segment(601, &sample_events(4, 600)).unwrap();
        let engine = SqlEngine::new(&lake).unwrap();
        let sql = "SELECT count(*) FROM events WHERE kind = 'gps' AND day = DATE '2026-11-22'";
        // (count(*) alone is answered from file statistics; select a column to see the scan.)
        let listing = "SELECT id FROM events WHERE kind = 'gps' AND day = DATE '2026-11-22'";
        let (plan, _) = engine.physical_plan(listing, vec![]).await.unwrap();
        let (mut files, mut groups) = (0, (0, 0));
        scans(&plan, &mut files, &mut groups);
        assert_eq!(files, 2, "only kind=gps/day=2026-11-22, one file per segment, of 12 files");
        let expected = sample_events(3, 600)
            .into_iter()
            .chain(sample_events(4, 600))
            .filter(|e| e.kind == "gps" && e.time.date_naive().to_string() == "2026-11-22")
            .count() as i64;
        assert_eq!(count(&engine.query(sql, vec![], 1).await.unwrap()), expected);
        // `day` also compares with a plain string, and ranges prune as well.
        let range = "SELECT id FROM events WHERE day >= '2026-11-22'";
        let (plan, _) = engine.physical_plan(range, vec![]).await.unwrap();
        let mut files = 0;
        scans(&plan, &mut files, &mut (0, 0));
        assert_eq!(files, 6);
    }

    #[tokio::test]
    async fn source_and_time_filters_skip_row_groups() {
        let options = LakeOptions { row_group_rows: 100, data_page_rows: 20, ..LakeOptions::default() };
        let (_dir, lake) = lake_with(options);
        let events = sample_events(5, 6000);
        lake.write_segment(1, &events).unwrap();
        let tail = sample_events(6, 300);
        let engine = SqlEngine::new(&lake).unwrap();
        let since = parse_time("2026-11-22T00:30:00Z").unwrap();
        let sql = "SELECT id FROM events WHERE source = 'truck-003' AND time > TIMESTAMP '2026-11-22T00:30:00Z' ORDER BY id";
        let expected: Vec<Vec<Value>> = {
            let mut ids: Vec<&str> = events
                .iter()
                .chain(&tail)
                .filter(|e| e.source == "truck-003" && e.time > since)
                .map(|e| e.id.as_str())
                .collect();
            ids.sort();
            ids.into_iter().map(|id| vec![json!(id)]).collect()
        };
        assert!(!expected.is_empty());
        let tail_batch = engine.tail_batch(&tail).unwrap();
        let result = engine.query(sql, vec![tail_batch.clone()], 10_000).await.unwrap();
        assert_eq!(result.rows, expected);

        let (plan, task) = engine.physical_plan(sql, vec![tail_batch]).await.unwrap();
        datafusion::physical_plan::collect(plan.clone(), task).await.unwrap();
        let (mut files, mut groups) = (0, (0, 0));
        scans(&plan, &mut files, &mut groups);
        let (total, matched) = groups;
        assert!(total >= 10, "the gps files hold many row groups: {groups:?}");
        assert!(matched * 4 <= total, "statistics on the sorted source column skip most row groups: {groups:?}");
    }

    #[tokio::test]
    async fn only_queries_are_allowed() {
        let (_dir, lake) = lake_with(LakeOptions::default());
        lake.write_segment(1, &sample_events(7, 30)).unwrap();
        let engine = SqlEngine::new(&lake).unwrap();
        for sql in [
            "CREATE TABLE t AS SELECT 1",
            "CREATE VIEW v AS SELECT * FROM events",
            "DROP TABLE events",
            "INSERT INTO events (id) VALUES ('x')",
            "DELETE FROM events",
            "UPDATE events SET source = 'x'",
            "SET datafusion.execution.batch_size = 1",
            "COPY (SELECT * FROM events) TO '/tmp/cityward-copy-test.parquet'",
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp'",
            "-- sneaky\nDROP VIEW events",
            "EXPLAIN INSERT INTO events (id) VALUES ('x')",
        ] {
            let err = engine.query(sql, vec![], 10).await.unwrap_err();
            assert!(matches!(err, StoreError::ReadOnly { .. }), "{sql}: {err}");
            assert_eq!(err.status(), Status::InvalidInput);
            assert!(err.to_string().contains("only SELECT queries are allowed"), "{err}");
        }
        assert!(!std::path::Path::new("/tmp/cityward-copy-test.parquet").exists());
        assert_eq!(count(&engine.query("SELECT count(*) FROM events", vec![], 1).await.unwrap()), 30);
        for sql in [
            "WITH g AS (SELECT * FROM events WHERE kind = 'gps') SELECT count(*) FROM g",
            "EXPLAIN SELECT * FROM events WHERE source = 'x'",
            "DESCRIBE events",
            "SHOW TABLES",
        ] {
            engine.query(sql, vec![], 100).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[tokio::test]
    async fn sql_mistakes_are_invalid_input_with_datafusions_message() {
        let (_dir, lake) = lake_with(LakeOptions::default());
        let engine = SqlEngine::new(&lake).unwrap();
        let err = engine.query("SELECT nope FROM events", vec![], 10).await.unwrap_err();
        assert_eq!(err.status(), Status::InvalidInput, "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        let err = engine.query("SELEC 1", vec![], 10).await.unwrap_err();
        assert_eq!(err.status(), Status::InvalidInput, "{err}");
        let err = engine.query("SELECT * FROM elsewhere", vec![], 10).await.unwrap_err();
        assert!(err.to_string().contains("elsewhere"), "{err}");
    }

    #[tokio::test]
    async fn results_are_capped_at_max_rows() {
        let (_dir, lake) = lake_with(LakeOptions::default());
        lake.write_segment(1, &sample_events(8, 50)).unwrap();
        let engine = SqlEngine::new(&lake).unwrap();
        let capped = engine.query("SELECT id FROM events", vec![], 7).await.unwrap();
        assert_eq!((capped.rows.len(), capped.truncated), (7, true));
        let exact = engine.query("SELECT id FROM events LIMIT 7", vec![], 7).await.unwrap();
        assert_eq!((exact.rows.len(), exact.truncated), (7, false));
        let explained = engine.query("EXPLAIN SELECT id FROM events", vec![], 100).await.unwrap();
        assert_eq!(explained.columns, vec!["plan_type", "plan"]);
    }

    #[tokio::test]
    async fn new_files_are_seen_without_a_new_engine() {
        let (_dir, lake) = lake_with(LakeOptions::default());
        let engine = SqlEngine::new(&lake).unwrap();
        assert_eq!(count(&engine.query("SELECT count(*) FROM events", vec![], 1).await.unwrap()), 0);
        lake.write_segment(1, &sample_events(9, 40)).unwrap();
        assert_eq!(count(&engine.query("SELECT count(*) FROM events", vec![], 1).await.unwrap()), 40);
        lake.write_segment(41, &sample_events(10, 40)).unwrap();
        assert_eq!(count(&engine.query("SELECT count(*) FROM events", vec![], 1).await.unwrap()), 80);
    }

    #[tokio::test]
    async fn files_written_before_a_kind_gained_an_attribute_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = Lake::open(dir.path(), &KindRegistry::builtin()).unwrap();
        old.write_segment(1, &sample_events(11, 30)).unwrap();
        drop(old);

        let mut kinds = KindRegistry::builtin();
        let mut gps = kinds.get("gps").unwrap().clone();
        gps.attrs.insert("fuel_pct".into(), AttrSpec { ty: AttrType::Number, required: false });
        kinds.declare("gps", gps);
        let lake = Lake::open(dir.path(), &kinds).unwrap();
        let engine = SqlEngine::new(&lake).unwrap();
        let mut fresh = sample_events(12, 3);
        fresh[0].attrs.insert("fuel_pct".into(), json!(55.5));
        let result = engine
            .query_events(
                "SELECT count(*), count(fuel_pct), max(fuel_pct) FROM events WHERE kind = 'gps'",
                &fresh,
                1,
            )
            .await
            .unwrap();
        assert_eq!(result.rows, vec![vec![json!(11), json!(1), json!(55.5)]]);
    }

    /// A WAL stand-in: (sequence number, event).
    fn wal_after(wal: &[(u64, Event)], through: Option<u64>) -> Result<Vec<Event>, String> {
        Ok(wal.iter().filter(|(seq, _)| through.is_none_or(|t| *seq > t)).map(|(_, e)| e.clone()).collect())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_counts_a_segment_once_while_it_is_compacted() {
        let (_dir, lake) = lake_with(LakeOptions::default());
        let lake = Arc::new(lake);
        let engine = SqlEngine::new(&lake).unwrap();
        let wal: Vec<(u64, Event)> = (1..).zip(sample_events(13, 400)).collect();
        lake.write_segment(1, &wal[..100].iter().map(|(_, e)| e.clone()).collect::<Vec<_>>()).unwrap();
        let sql = "SELECT count(*) FROM events";

        let mut compactor = None;
        let result = engine
            .query_with_tail(sql, 1, |through| {
                assert_eq!(through, Some(100));
                let tail = wal_after(&wal, through);
                // Compaction of the next segment starts while the query is being planned.
                let lake = lake.clone();
                let segment: Vec<Event> = wal[100..250].iter().map(|(_, e)| e.clone()).collect();
                compactor = Some(std::thread::spawn(move || lake.write_segment(101, &segment).unwrap()));
                std::thread::sleep(std::time::Duration::from_millis(50));
                tail
            })
            .await
            .unwrap();
        assert_eq!(count(&result), 400);
        let report = compactor.unwrap().join().unwrap();
        assert_eq!(report.last_seq, 250);
        let after = engine.query_with_tail(sql, 1, |through| wal_after(&wal, through)).await.unwrap();
        assert_eq!(count(&after), 400);
        assert_eq!(lake.compacted_through(), Some(250));
    }

    #[tokio::test]
    async fn a_read_only_lake_is_queried_but_never_changed() {
        let (dir, owner) = lake_with(LakeOptions::default());
        let wal: Vec<(u64, Event)> = (1..).zip(sample_events(14, 60)).collect();
        owner.write_segment(1, &wal[..30].iter().map(|(_, e)| e.clone()).collect::<Vec<_>>()).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let in_flight = owner.partition_dir("gps", day).join(".seg-00000000000000000031.parquet.tmp");
        std::fs::write(&in_flight, b"being written by the node").unwrap();

        let reader = Lake::open_read_only(dir.path(), &KindRegistry::builtin()).unwrap();
        assert!(in_flight.exists(), "read-only open leaves the owner's files alone");
        let engine = SqlEngine::new(&reader).unwrap();
        let sql = "SELECT count(*) FROM events";
        assert_eq!(count(&engine.query_with_tail(sql, 1, |t| wal_after(&wal, t)).await.unwrap()), 60);
        // The owner compacts more; the reader follows the manifest on disk.
        std::fs::remove_file(&in_flight).unwrap();
        owner.write_segment(31, &wal[30..].iter().map(|(_, e)| e.clone()).collect::<Vec<_>>()).unwrap();
        let seen = std::cell::Cell::new(None);
        let result = engine
            .query_with_tail(sql, 1, |t| {
                seen.set(t);
                wal_after(&wal, t)
            })
            .await
            .unwrap();
        assert_eq!((count(&result), seen.get()), (60, Some(60)));

        let err = reader.write_segment(61, &sample_events(15, 3)).unwrap_err();
        assert_eq!(err.status(), Status::Forbidden, "{err}");
        assert!(reader.merge_small_files().await.is_err());
        let policy = crate::RetentionPolicy { default: Some(std::time::Duration::from_secs(86_400)), ..Default::default() };
        let later = parse_time("2027-01-01T00:00:00Z").unwrap();
        assert!(matches!(reader.apply_retention(&policy, later).await, Err(StoreError::LakeReadOnly { .. })));
        assert_eq!(reader.plan_retention(&policy, later).unwrap().partitions.len(), 6);
        let err = engine.query_with_tail(sql, 1, |_| Err::<Vec<Event>, _>("segment 7 unreadable")).await.unwrap_err();
        assert!(err.to_string().contains("segment 7 unreadable"), "{err}");
    }

    #[test]
    fn values_convert_to_json() {
        let micros: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_795_143_600_250_000), None, Some(1_795_143_600_250_001)])
                .with_timezone("UTC"),
        );
        assert_eq!(
            column_to_json(&micros).unwrap(),
            vec![json!("2026-11-20T03:00:00.250Z"), Value::Null, json!("2026-11-20T03:00:00.250001Z")]
        );
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![1.5, f64::NAN]));
        assert_eq!(column_to_json(&floats).unwrap(), vec![json!(1.5), Value::Null]);
        let dates: ArrayRef = Arc::new(Date32Array::from(vec![20_779]));
        assert_eq!(column_to_json(&dates).unwrap(), vec![json!("2026-11-22")]);
        let ints: ArrayRef = Arc::new(datafusion::arrow::array::Int32Array::from(vec![Some(-3), None]));
        assert_eq!(column_to_json(&ints).unwrap(), vec![json!(-3), Value::Null]);
        assert_eq!(write_keyword("  /* x */ insert into t values (1)").as_deref(), Some("INSERT"));
        assert_eq!(write_keyword("select 1"), None);
    }
}
