//! The SQL transform: a `SELECT … FROM t1 [WHERE …]` answered for every batch.
//!
//! The query is planned once, when the transform is built: DataFusion parses, resolves
//! and type-checks it against the declared input schema, the optimizer simplifies it, and
//! the resulting projection and filter expressions are compiled into physical
//! expressions. Per batch, only those expressions are evaluated — no planning on the hot
//! path. A query that would need state across batches (GROUP BY, JOIN, ORDER BY, window
//! functions, DISTINCT, LIMIT) is refused at build time, naming the clause — except a
//! `GROUP BY` with `tumble`/`hop`, which [`SqlTransformBuilder::build_plan`] plans onto the
//! window operator ([`crate::window`]).

use std::future::Future;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::compute::CastOptions;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;
use datafusion::catalog::MemTable;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionConfig;
use operators_core::codec::JsonEncoder;
use operators_core::operator::{BadRecordPolicy, DeadLetter, OperatorContext, TaskInfo, Transform, TransformFactory};
use operators_core::schema::{convert_strings, parse_schema};

use crate::error::SqlError;
use crate::udf::builtin_udfs;
use crate::window::{SqlPlan, misplaced_window_function, plan_windowed, windowed_select};

/// Builds a [`SqlTransform`].
///
/// ```
/// use operators_sql::SqlTransformBuilder;
/// let sql = SqlTransformBuilder::new("select id, concat(x, '-', y) as location from t1 where id > 1")
///     .with_schema_string("struct<id:BigInt,x:String,y:String>")
///     .unwrap()
///     .build()
///     .unwrap();
/// assert_eq!(sql.output_schema().field(1).name(), "location");
/// ```
#[derive(Debug, Clone)]
pub struct SqlTransformBuilder {
    sql: String,
    table: String,
    schema: Option<SchemaRef>,
    udfs: Vec<ScalarUDF>,
    bad_records: BadRecordPolicy,
}

impl SqlTransformBuilder {
    /// A query over the table `t1`.
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            table: "t1".into(),
            schema: None,
            udfs: builtin_udfs(),
            bad_records: BadRecordPolicy::Fail,
        }
    }

    /// What to do with a row whose values do not fit the input schema (default: fail).
    pub fn with_bad_records(mut self, policy: BadRecordPolicy) -> Self {
        self.bad_records = policy;
        self
    }

    /// The table name the query reads (default `t1`).
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The schema of the input stream.
    pub fn with_schema(mut self, schema: SchemaRef) -> Self {
        self.schema = Some(schema);
        self
    }

    /// The input schema as a toolkit schema string (`struct<...>` or ordered JSON).
    pub fn with_schema_string(self, schema: &str) -> Result<Self, SqlError> {
        Ok(self.with_schema(parse_schema(schema)?))
    }

    /// Makes a scalar UDF callable from the query.
    pub fn with_udf(mut self, udf: ScalarUDF) -> Self {
        self.udfs.push(udf);
        self
    }

    /// Plans the query. Fails on syntax, unknown columns or functions, type errors and
    /// stateful clauses, with DataFusion's message and the SQL text.
    pub fn build(self) -> Result<SqlTransform, SqlError> {
        // Planning awaits nothing but in-memory catalog lookups, which are ready at once,
        // so the future is polled to completion here without an executor: this works
        // inside a tokio runtime, inside another executor, and outside of any.
        let mut future = std::pin::pin!(self.build_async());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..10_000 {
            if let std::task::Poll::Ready(result) = future.as_mut().poll(&mut cx) {
                return result;
            }
            std::thread::yield_now();
        }
        Err(SqlError::Input("planning did not complete; use `build_async` from async code".into()))
    }

    /// Async form of [`SqlTransformBuilder::build`].
    pub async fn build_async(self) -> Result<SqlTransform, SqlError> {
        match self.plan_async(false).await? {
            SqlPlan::Stateless(t) => Ok(t),
            // `plan_async(false)` refuses windowed queries before planning them.
            SqlPlan::Windowed(w) => Err(SqlError::Unsupported {
                clause: "GROUP BY tumble(...) / hop(...)",
                reason: "is a windowed aggregation: plan it with SqlTransformBuilder::build_plan".into(),
                sql: w.sql().to_string(),
            }),
        }
    }

    /// Plans the query, per-batch or windowed: a query whose top-level `GROUP BY` has
    /// `tumble(ts, size)` or `hop(ts, slide, size)` becomes a [`WindowedSql`](crate::WindowedSql)
    /// (see [`crate::window`]), any other a [`SqlTransform`] as [`build`](Self::build) makes.
    pub fn build_plan(self) -> Result<SqlPlan, SqlError> {
        let mut future = std::pin::pin!(self.plan_async(true));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for _ in 0..10_000 {
            if let std::task::Poll::Ready(result) = future.as_mut().poll(&mut cx) {
                return result;
            }
            std::thread::yield_now();
        }
        Err(SqlError::Input("planning did not complete; use `build_plan_async` from async code".into()))
    }

    /// Async form of [`SqlTransformBuilder::build_plan`].
    pub async fn build_plan_async(self) -> Result<SqlPlan, SqlError> {
        self.plan_async(true).await
    }

    /// The same builder with another query (the windowed path's pre-projection).
    pub(crate) fn with_sql(mut self, sql: String) -> Self {
        self.sql = sql;
        self
    }

    async fn plan_async(self, windows: bool) -> Result<SqlPlan, SqlError> {
        let sql = self.sql.trim().trim_end_matches(';').to_string();
        let plan_err = |e: datafusion::error::DataFusionError| SqlError::Plan {
            message: e.to_string(),
            sql: sql.clone(),
            source: Some(Box::new(e)),
        };
        let Some(schema) = self.schema.clone() else {
            return Err(SqlError::Input("no input schema was given".into()));
        };
        // Identifiers keep their case, as in Flink SQL: a column `Name` is `Name`.
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.enable_ident_normalization = false;
        // `varchar` means Utf8, the toolkit's String, not DataFusion's newer Utf8View.
        config.options_mut().sql_parser.map_string_types_to_utf8view = false;
        let ctx = SessionContext::new_with_config(config);
        for udf in &self.udfs {
            ctx.register_udf(udf.clone());
        }
        let table = MemTable::try_new(schema.clone(), vec![vec![]]).map_err(plan_err)?;
        ctx.register_table(self.table.as_str(), Arc::new(table)).map_err(plan_err)?;
        let state = ctx.state();
        // Windowed queries are recognised on the AST; DataFusion plans their parts.
        if let Ok(statement) = state.sql_to_statement(&sql, &state.config_options().sql_parser.dialect) {
            if let Some((query, select)) = windowed_select(&statement) {
                if !windows {
                    return Err(SqlError::Unsupported {
                        clause: "GROUP BY tumble(...) / hop(...)",
                        reason: "is a windowed aggregation, which runs on the window operator: plan it with \
                                 SqlTransformBuilder::build_plan"
                            .into(),
                        sql,
                    });
                }
                let windowed = plan_windowed(&self, &state, schema.clone(), query, select, &sql).await?;
                return Ok(SqlPlan::Windowed(Box::new(windowed)));
            }
            misplaced_window_function(&statement, &sql)?;
        }
        let plan = state.create_logical_plan(&sql).await.map_err(plan_err)?;
        check_stateless(&plan, &sql)?;
        let optimized = state.optimize(&plan).map_err(plan_err)?;
        let mut steps = Vec::new();
        let mut output = compile(&optimized, &state, &schema, &mut steps, &sql)?;
        // Functions may still produce view types; downstream connectors expect Utf8.
        if output.fields().iter().any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView)) {
            output = Arc::new(Schema::new(
                output
                    .fields()
                    .iter()
                    .map(|f| match f.data_type() {
                        DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
                        DataType::BinaryView => f.as_ref().clone().with_data_type(DataType::Binary),
                        _ => f.as_ref().clone(),
                    })
                    .collect::<Vec<_>>(),
            ));
            steps.push(Step::Cast(output.clone()));
        }
        Ok(SqlPlan::Stateless(SqlTransform {
            query: Arc::new(CompiledQuery { sql, input: schema, output, steps, bad_records: self.bad_records }),
        }))
    }
}

/// The user-facing name of a plan node that needs state, if it does.
fn stateful_clause(plan: &LogicalPlan) -> Option<(&'static str, &'static str)> {
    const STATE: &str = "needs state across batches, which the SQL transform does not keep";
    Some(match plan {
        LogicalPlan::Aggregate(_) => (
            "GROUP BY / aggregate functions",
            "need state across batches; a windowed aggregation groups by a window too: \
                 GROUP BY k, tumble(ts, INTERVAL '1' SECOND) or hop(ts, <slide>, <size>)",
        ),
        LogicalPlan::Join(_) => ("JOIN", "between streams needs state across batches"),
        LogicalPlan::Sort(_) => ("ORDER BY", "over an unbounded stream needs all of it"),
        LogicalPlan::Window(_) => ("window functions (OVER ...)", STATE),
        LogicalPlan::Limit(_) => ("LIMIT / OFFSET", STATE),
        LogicalPlan::Distinct(_) => ("DISTINCT", STATE),
        LogicalPlan::Union(_) => ("UNION", "is not supported; use one query per stream"),
        LogicalPlan::Subquery(_) => ("subqueries", "read the stream twice, which needs state across batches"),
        LogicalPlan::RecursiveQuery(_) => ("WITH RECURSIVE", STATE),
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Statement(_) | LogicalPlan::Copy(_) => {
            ("statements other than SELECT", "cannot run on a stream")
        }
        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_) => {
            ("EXPLAIN / DESCRIBE", "cannot run on a stream")
        }
        _ => return None,
    })
}

fn check_stateless(plan: &LogicalPlan, sql: &str) -> Result<(), SqlError> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        if let Some(c) = stateful_clause(node) {
            found = Some(c);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    match found {
        Some((clause, reason)) => {
            Err(SqlError::Unsupported { clause, reason: reason.to_string(), sql: sql.to_string() })
        }
        None => Ok(()),
    }
}

/// One step of the compiled query.
#[derive(Debug)]
enum Step {
    /// Keep these columns (the scan's projection).
    Columns(Vec<usize>, SchemaRef),
    /// Keep the rows where the predicate is true.
    Filter(Arc<dyn PhysicalExpr>),
    /// Compute new columns.
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
    /// Cast columns to the types of this schema.
    Cast(SchemaRef),
}

/// Compiles `plan` into `steps`; returns the schema it produces.
fn compile(
    plan: &LogicalPlan,
    state: &datafusion::execution::SessionState,
    input: &SchemaRef,
    steps: &mut Vec<Step>,
    sql: &str,
) -> Result<SchemaRef, SqlError> {
    let plan_err = |e: datafusion::error::DataFusionError| SqlError::Plan {
        message: e.to_string(),
        sql: sql.to_string(),
        source: Some(Box::new(e)),
    };
    let physical = |e: &datafusion::logical_expr::Expr, schema: &DFSchema| {
        state.create_physical_expr(e.clone(), schema).map_err(plan_err)
    };
    match plan {
        LogicalPlan::TableScan(scan) => {
            if scan.fetch.is_some() {
                return Err(SqlError::Unsupported {
                    clause: "LIMIT / OFFSET",
                    reason: "needs state across batches".into(),
                    sql: sql.to_string(),
                });
            }
            let mut schema = input.clone();
            if let Some(p) = &scan.projection {
                schema = Arc::new(input.project(p).map_err(|e| plan_err(e.into()))?);
                steps.push(Step::Columns(p.clone(), schema.clone()));
            }
            for f in &scan.filters {
                steps.push(Step::Filter(physical(f, &scan.projected_schema)?));
            }
            Ok(schema)
        }
        LogicalPlan::Filter(f) => {
            let schema = compile(&f.input, state, input, steps, sql)?;
            steps.push(Step::Filter(physical(&f.predicate, f.input.schema())?));
            Ok(schema)
        }
        LogicalPlan::Projection(p) => {
            compile(&p.input, state, input, steps, sql)?;
            let exprs = p.expr.iter().map(|e| physical(e, p.input.schema())).collect::<Result<Vec<_>, _>>()?;
            let schema: SchemaRef = Arc::new(p.schema.as_arrow().clone());
            steps.push(Step::Project(exprs, schema.clone()));
            Ok(schema)
        }
        LogicalPlan::SubqueryAlias(a) => compile(&a.input, state, input, steps, sql),
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Err(SqlError::Unsupported {
            clause: "queries without FROM",
            reason: "must read the input table".into(),
            sql: sql.to_string(),
        }),
        other => Err(match stateful_clause(other) {
            Some((clause, reason)) => {
                SqlError::Unsupported { clause, reason: reason.to_string(), sql: sql.to_string() }
            }
            None => SqlError::Unsupported {
                clause: "this query",
                reason: format!("plans to `{}`, which the SQL transform cannot evaluate per batch", other.display()),
                sql: sql.to_string(),
            },
        }),
    }
}

#[derive(Debug)]
struct CompiledQuery {
    sql: String,
    input: SchemaRef,
    output: SchemaRef,
    steps: Vec<Step>,
    bad_records: BadRecordPolicy,
}

/// A planned SQL query, evaluated batch by batch. Cheap to clone; usable as a
/// [`TransformFactory`].
#[derive(Debug, Clone)]
pub struct SqlTransform {
    query: Arc<CompiledQuery>,
}

/// Bad input rows found while fitting a batch to the declared schema.
type BadRows = Vec<(usize, String)>;

impl SqlTransform {
    /// The declared input schema.
    pub fn input_schema(&self) -> SchemaRef {
        self.query.input.clone()
    }

    /// The schema of the query's output.
    pub fn output_schema(&self) -> SchemaRef {
        self.query.output.clone()
    }

    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.query.sql
    }

    /// A failure of DataFusion or Arrow on a batch, kept as the cause.
    fn exec_err(&self, e: impl std::error::Error + Send + Sync + 'static) -> SqlError {
        SqlError::Execution { message: e.to_string(), sql: self.query.sql.clone(), source: Some(Box::new(e)) }
    }

    /// A failure this crate found, with no library error behind it.
    fn exec_msg(&self, message: &str) -> SqlError {
        SqlError::Execution { message: message.to_string(), sql: self.query.sql.clone(), source: None }
    }

    /// Fits `batch` to the declared input schema: picks the declared columns by name,
    /// converts types (text by the toolkit's rules, others by Arrow's cast), and reports
    /// rows whose values do not convert.
    fn conform(&self, batch: &RecordBatch) -> Result<(RecordBatch, BadRows), SqlError> {
        let target = &self.query.input;
        if batch.schema().fields() == target.fields() {
            return Ok((batch.clone(), Vec::new()));
        }
        let schema = batch.schema();
        let mut columns = Vec::with_capacity(target.fields().len());
        let mut bad: BadRows = Vec::new();
        for field in target.fields() {
            let idx = schema
                .index_of(field.name())
                .ok()
                .or_else(|| schema.fields().iter().position(|f| f.name().eq_ignore_ascii_case(field.name())));
            let Some(idx) = idx else {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(SqlError::Input(format!(
                    "column `{}` of the SQL schema is not in the stream (columns: {})",
                    field.name(),
                    names.join(", ")
                )));
            };
            let column = batch.column(idx);
            if column.data_type() == field.data_type() {
                columns.push(column.clone());
                continue;
            }
            if let Some(strings) = column.as_string_opt::<i32>() {
                let converted = convert_strings(strings, field.data_type());
                bad.extend(
                    converted.errors.into_iter().map(|(row, why)| (row, format!("column `{}`: {why}", field.name()))),
                );
                columns.push(converted.array);
                continue;
            }
            let strict = CastOptions { safe: false, ..Default::default() };
            match arrow::compute::cast_with_options(column, field.data_type(), &strict) {
                Ok(c) => columns.push(c),
                Err(_) => {
                    let lenient = arrow::compute::cast(column, field.data_type()).map_err(|e| {
                        SqlError::Input(format!(
                            "column `{}` is {} and cannot become {}: {e}",
                            field.name(),
                            column.data_type(),
                            field.data_type()
                        ))
                    })?;
                    for row in 0..column.len() {
                        if column.is_valid(row) && lenient.is_null(row) {
                            bad.push((
                                row,
                                format!("column `{}`: value does not fit {}", field.name(), field.data_type()),
                            ));
                        }
                    }
                    columns.push(lenient);
                }
            }
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let out = RecordBatch::try_new_with_options(target.clone(), columns, &options)
            .map_err(|e| SqlError::Input(e.to_string()))?;
        Ok((out, bad))
    }

    /// Runs the query on one batch that already has the input schema.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<RecordBatch, SqlError> {
        let mut current = batch.clone();
        for step in &self.query.steps {
            current = match step {
                Step::Columns(idx, schema) => {
                    let cols = idx.iter().map(|&i| current.column(i).clone()).collect();
                    let options = RecordBatchOptions::new().with_row_count(Some(current.num_rows()));
                    RecordBatch::try_new_with_options(schema.clone(), cols, &options).map_err(|e| self.exec_err(e))?
                }
                Step::Filter(predicate) => {
                    let mask = predicate
                        .evaluate(&current)
                        .and_then(|v| v.into_array(current.num_rows()))
                        .map_err(|e| self.exec_err(e))?;
                    let mask: &BooleanArray =
                        mask.as_boolean_opt().ok_or_else(|| self.exec_msg("the WHERE clause is not a boolean"))?;
                    arrow::compute::filter_record_batch(&current, mask).map_err(|e| self.exec_err(e))?
                }
                Step::Cast(schema) => {
                    let cols = current
                        .columns()
                        .iter()
                        .zip(schema.fields())
                        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                        .collect::<Result<Vec<ArrayRef>, _>>()
                        .map_err(|e| self.exec_err(e))?;
                    let options = RecordBatchOptions::new().with_row_count(Some(current.num_rows()));
                    RecordBatch::try_new_with_options(schema.clone(), cols, &options).map_err(|e| self.exec_err(e))?
                }
                Step::Project(exprs, schema) => {
                    let rows = current.num_rows();
                    let cols = exprs
                        .iter()
                        .map(|e| e.evaluate(&current).and_then(|v| v.into_array(rows)))
                        .collect::<Result<Vec<ArrayRef>, _>>()
                        .map_err(|e| self.exec_err(e))?;
                    let options = RecordBatchOptions::new().with_row_count(Some(rows));
                    RecordBatch::try_new_with_options(schema.clone(), cols, &options).map_err(|e| self.exec_err(e))?
                }
            };
        }
        Ok(current)
    }

    /// Fits `batch` to the input schema and runs the query. Rows that do not fit the
    /// schema are returned as `(row index in batch, reason)` and left out.
    pub fn process(&self, batch: &RecordBatch) -> Result<(RecordBatch, BadRows), SqlError> {
        let (conformed, bad) = self.conform(batch)?;
        let input = if bad.is_empty() {
            conformed
        } else {
            let mut keep = vec![true; conformed.num_rows()];
            for (row, _) in &bad {
                keep[*row] = false;
            }
            arrow::compute::filter_record_batch(&conformed, &BooleanArray::from(keep)).map_err(|e| self.exec_err(e))?
        };
        Ok((self.evaluate(&input)?, bad))
    }
}

fn row_as_json(batch: &RecordBatch, row: usize) -> String {
    let one = batch.slice(row, 1);
    let mut out = Vec::new();
    match JsonEncoder::new().encode_lines(&one, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).trim_end().to_string(),
        Err(_) => format!("row {row}"),
    }
}

struct SqlTask {
    query: SqlTransform,
}

#[async_trait]
impl Transform for SqlTask {
    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> operators_core::Result<()> {
        let (out, bad) = self.query.process(&batch)?;
        // A value the declared type cannot hold is a bad record, never a silent null.
        for (row, reason) in bad {
            let letter = DeadLetter {
                origin: format!("sql input `{}`", ctx.info().operator_id),
                line: None,
                offset: None,
                reason,
                record: row_as_json(&batch, row),
            };
            if self.query.query.bad_records == BadRecordPolicy::Fail {
                return Err(operators_core::Error::bad_record(
                    format!("{} ({})", letter.origin, letter.record),
                    letter.reason,
                ));
            }
            ctx.dead_letter(letter);
        }
        if out.num_rows() > 0 {
            ctx.emit(out);
        }
        Ok(())
    }
}

impl TransformFactory for SqlTransform {
    fn create(&self, _info: &TaskInfo) -> operators_core::Result<Box<dyn Transform>> {
        Ok(Box::new(SqlTask { query: self.clone() }))
    }
}

/// A schema with every field nullable (inputs from files and JSON may hold nulls anywhere).
pub fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>()))
}

/// Formats one value for tests and logs (lists as `[a, b]`, null as `NULL`).
pub fn display_value(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    if let DataType::List(_) = array.data_type() {
        let list = array.as_list::<i32>();
        let values = list.value(row);
        let items: Vec<String> = (0..values.len()).map(|i| display_value(values.as_ref(), i)).collect();
        return format!("[{}]", items.join(", "));
    }
    let options = arrow::util::display::FormatOptions::default().with_null("NULL");
    match arrow::util::display::ArrayFormatter::try_new(array, &options) {
        Ok(f) => f.value(row).to_string(),
        Err(_) => "?".into(),
    }
}
