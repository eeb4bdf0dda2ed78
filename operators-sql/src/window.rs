//! Windowed aggregation in SQL: `GROUP BY keys, tumble(ts, INTERVAL …)` or
//! `hop(ts, slide, size)`, planned onto the core window operator.
//!
//! The query is recognised on DataFusion's sqlparser AST and split in three: a stateless
//! pre-projection (the WHERE and the columns keys and aggregates read, an ordinary
//! [`SqlTransform`]), the keyed event-time window of `operators_core::window`, and a
//! projection to the SELECT list's names and order.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr as DfExpr;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, ExprWithAlias, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Query,
    Select, SelectFlavor, SelectItem, SetExpr, Statement, visit_expressions,
};
use operators_core::Stream;
use operators_core::operator::{OperatorContext, TaskInfo, Transform, TransformFactory};
use operators_core::window::{Agg, IS_UPDATE, WINDOW_END, WINDOW_START, WatermarkGenerator, Windows};

use crate::error::SqlError;
use crate::transform::{SqlTransform, SqlTransformBuilder};

/// A planned query: per-batch ([`SqlTransform`]) or windowed ([`WindowedSql`]).
///
/// Made by [`SqlTransformBuilder::build_plan`]; added to a pipeline with
/// [`SqlPlan::apply`] or [`SqlStreamExt::sql`].
#[derive(Debug, Clone)]
pub enum SqlPlan {
    /// `SELECT … FROM t1 [WHERE …]`, answered for every batch.
    Stateless(SqlTransform),
    /// `SELECT … GROUP BY …, tumble(…)` or `hop(…)`, on the window operator.
    Windowed(Box<WindowedSql>),
}

impl From<WindowedSql> for SqlPlan {
    fn from(w: WindowedSql) -> Self {
        SqlPlan::Windowed(Box::new(w))
    }
}

impl From<SqlTransform> for SqlPlan {
    fn from(t: SqlTransform) -> Self {
        SqlPlan::Stateless(t)
    }
}

/// The streams a planned query adds to a pipeline.
#[derive(Debug, Clone)]
pub struct SqlOutput {
    /// The query's result rows.
    pub rows: Stream,
    /// Dead-letter outputs of the operators added: rows that do not fit the input schema
    /// and, for windowed queries, rows without an event time.
    pub dead_letters: Vec<Stream>,
    /// For windowed queries, the rows later than the allowed lateness, in the schema of
    /// the pre-projection (see [`WindowedSql::pre_projection`]).
    pub late_records: Option<Stream>,
}

impl SqlPlan {
    /// The declared input schema.
    pub fn input_schema(&self) -> SchemaRef {
        match self {
            SqlPlan::Stateless(t) => t.input_schema(),
            SqlPlan::Windowed(w) => w.input_schema(),
        }
    }

    /// The schema of the query's result rows.
    pub fn output_schema(&self) -> SchemaRef {
        match self {
            SqlPlan::Stateless(t) => t.output_schema(),
            SqlPlan::Windowed(w) => w.output_schema(),
        }
    }

    /// The SQL text.
    pub fn sql(&self) -> &str {
        match self {
            SqlPlan::Stateless(t) => t.sql(),
            SqlPlan::Windowed(w) => w.sql(),
        }
    }

    /// Whether the query groups by a window.
    pub fn is_windowed(&self) -> bool {
        matches!(self, SqlPlan::Windowed(_))
    }

    /// Adds the query's operators after `stream`, under ids starting with `id`: one
    /// transform `id` for a per-batch query; `id-watermarks` (with a watermark),
    /// `id` (the pre-projection), `id-window` and `id-project` for a windowed one.
    pub fn apply(&self, stream: Stream, id: &str) -> SqlOutput {
        match self {
            SqlPlan::Stateless(t) => {
                let rows = stream.transform(id, t.clone());
                SqlOutput { dead_letters: vec![rows.dead_letters()], rows, late_records: None }
            }
            SqlPlan::Windowed(w) => w.apply(stream, id),
        }
    }
}

/// Adds a planned query to a stream.
///
/// ```
/// use operators_sql::{SqlStreamExt, SqlTransformBuilder};
/// # fn f(stream: operators_core::Stream) -> Result<(), operators_sql::SqlError> {
/// let plan = SqlTransformBuilder::new("select id, count(*) as c from t1 group by id, tumble(ts, interval '1' second)")
///     .with_schema_string(r#"{"id":"BigInt","ts":"Timestamp"}"#)?
///     .build_plan()?;
/// let counts = stream.sql("sql", &plan);
/// # let _ = counts; Ok(()) }
/// ```
pub trait SqlStreamExt {
    /// Adds the operators of `plan` (see [`SqlPlan::apply`]) and returns its result rows.
    fn sql(self, id: &str, plan: &SqlPlan) -> Stream;
}

impl SqlStreamExt for Stream {
    fn sql(self, id: &str, plan: &SqlPlan) -> Stream {
        plan.apply(self, id).rows
    }
}

/// A windowed aggregation planned onto the core operators: pre-projection →
/// `key_by(keys)` → event-time window → projection to the SELECT list.
///
/// Windows are Flink's: `tumble(ts, size)` makes back-to-back windows aligned to the
/// epoch; `hop(ts, slide, size)` (Flink's `HOP` argument order: **slide, then size**)
/// makes windows of `size` every `slide`. A window fires when the watermark passes its
/// end, so the stream needs watermarks on the time column: give them with
/// [`WindowedSql::with_watermark`] or upstream of the query. End of input fires every
/// open window.
#[derive(Debug, Clone)]
pub struct WindowedSql {
    sql: String,
    input: SchemaRef,
    pre: SqlTransform,
    keys: Vec<String>,
    windows: Windows,
    time_input_column: Option<String>,
    /// For each output column, the window operator's column it is.
    columns: Vec<String>,
    output: SchemaRef,
    watermark: Option<WatermarkGenerator>,
}

impl WindowedSql {
    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The declared input schema.
    pub fn input_schema(&self) -> SchemaRef {
        self.input.clone()
    }

    /// The result schema: the SELECT list's names, in its order.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// The stateless query computing the key, time and aggregate-argument columns.
    pub fn pre_projection(&self) -> &SqlTransform {
        &self.pre
    }

    /// The key columns (of the pre-projection's output) the stream is keyed by.
    pub fn key_columns(&self) -> &[String] {
        &self.keys
    }

    /// The window specification given to the window operator.
    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// The input column the window's time argument names, when it is a plain column.
    pub fn time_column(&self) -> Option<&str> {
        self.time_input_column.as_deref()
    }

    /// The watermark generator placed before the query, if any.
    pub fn watermark(&self) -> Option<&WatermarkGenerator> {
        self.watermark.as_ref()
    }

    /// Assigns watermarks before the query (Flink's `WATERMARK FOR ts AS ts - INTERVAL …`).
    /// Fails unless the generator's column is a Timestamp (or BigInt epoch-ms) column of
    /// the input schema and, when the window's time argument is a column, that column.
    pub fn with_watermark(mut self, generator: WatermarkGenerator) -> Result<Self, SqlError> {
        let column = generator.column();
        let field = self.input.field_with_name(column).map_err(|_| {
            let names: Vec<&str> = self.input.fields().iter().map(|f| f.name().as_str()).collect();
            SqlError::Watermark(format!("column `{column}` is not in the input schema (columns: {})", names.join(", ")))
        })?;
        if !is_time_type(field.data_type()) {
            return Err(SqlError::Watermark(format!(
                "column `{column}` is {}; the watermark column must be a Timestamp (or BigInt epoch milliseconds)",
                field.data_type()
            )));
        }
        if let Some(time) = &self.time_input_column
            && time != column
        {
            return Err(SqlError::Watermark(format!(
                "the watermark is on `{column}`, but the query's window groups by `{time}`; use the same column"
            )));
        }
        self.watermark = Some(generator);
        Ok(self)
    }

    /// Keeps windows for `lateness` after they fired; a row in that time re-emits its
    /// window with `is_update = true` (select `is_update` to see it). Default zero.
    pub fn with_allowed_lateness(mut self, lateness: Duration) -> Self {
        self.windows = self.windows.allowed_lateness(lateness);
        self
    }

    /// Adds the query's operators after `stream`: `id-watermarks` (with a watermark), `id`
    /// (the pre-projection), a hash exchange on the keys, `id-window` and `id-project`.
    pub fn apply(&self, stream: Stream, id: &str) -> SqlOutput {
        let mut stream = stream;
        if let Some(w) = &self.watermark {
            stream = stream.assign_watermarks(&format!("{id}-watermarks"), w.clone());
        }
        let pre = stream.transform(id, self.pre.clone());
        let mut dead_letters = vec![pre.dead_letters()];
        let window = pre.key_by(self.keys.clone()).window(&format!("{id}-window"), self.windows.clone());
        dead_letters.push(window.dead_letters());
        let late_records = Some(window.late_records());
        let rows = window.transform(
            &format!("{id}-project"),
            WindowProjection { columns: Arc::new(self.columns.clone()), schema: self.output.clone() },
        );
        SqlOutput { rows, dead_letters, late_records }
    }
}

fn is_time_type(dt: &DataType) -> bool {
    matches!(dt, DataType::Timestamp(_, _) | DataType::Int64)
}

/// Picks the window operator's columns by name into the SELECT list's order, names and
/// types.
#[derive(Debug, Clone)]
struct WindowProjection {
    columns: Arc<Vec<String>>,
    schema: SchemaRef,
}

impl TransformFactory for WindowProjection {
    fn create(&self, _info: &TaskInfo) -> operators_core::Result<Box<dyn Transform>> {
        Ok(Box::new(WindowProjectionTask { projection: self.clone(), indices: None }))
    }
}

struct WindowProjectionTask {
    projection: WindowProjection,
    /// Column indices for the input schema they were computed for.
    indices: Option<(SchemaRef, Vec<usize>)>,
}

#[async_trait]
impl Transform for WindowProjectionTask {
    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> operators_core::Result<()> {
        let schema = batch.schema();
        let stale = self.indices.as_ref().is_none_or(|(s, _)| s != &schema);
        if stale {
            let indices = self
                .projection
                .columns
                .iter()
                .map(|c| {
                    schema.index_of(c).map_err(|_| {
                        operators_core::Error::config("sql", format!("the window output has no column `{c}`"))
                    })
                })
                .collect::<operators_core::Result<Vec<_>>>()?;
            self.indices = Some((schema, indices));
        }
        let Some((_, indices)) = &self.indices else { return Ok(()) };
        let target = &self.projection.schema;
        let columns = indices
            .iter()
            .zip(target.fields())
            .map(|(&i, field)| {
                let column = batch.column(i);
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    arrow::compute::cast(column, field.data_type())
                }
            })
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(|e| operators_core::Error::arrow("projecting the window output", e))?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let out = RecordBatch::try_new_with_options(target.clone(), columns, &options)
            .map_err(|e| operators_core::Error::arrow("projecting the window output", e))?;
        ctx.emit(out);
        Ok(())
    }
}

const WINDOW_FUNCTIONS: &[&str] = &["tumble", "hop"];
const WINDOW_PROPERTIES: &[&str] = &["tumble_start", "tumble_end", "hop_start", "hop_end"];
const SUPPORTED_AGGREGATES: &str = "count(*), count(x), sum, min, max, avg, first_value, last_value";

fn function_name(f: &Function) -> String {
    f.name.to_string().to_ascii_lowercase()
}

fn window_call(e: &Expr) -> Option<&Function> {
    match e {
        Expr::Function(f) if WINDOW_FUNCTIONS.contains(&function_name(f).as_str()) => Some(f),
        _ => None,
    }
}

/// The query and SELECT of a statement whose top-level GROUP BY has `tumble` or `hop`.
pub(crate) fn windowed_select(statement: &DfStatement) -> Option<(&Query, &Select)> {
    let DfStatement::Statement(s) = statement else { return None };
    let Statement::Query(q) = s.as_ref() else { return None };
    let SetExpr::Select(select) = q.body.as_ref() else { return None };
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else { return None };
    exprs.iter().any(|e| window_call(e).is_some()).then_some((q.as_ref(), select.as_ref()))
}

/// A window function used anywhere in a statement that is not a windowed query.
pub(crate) fn misplaced_window_function(statement: &DfStatement, sql: &str) -> Result<(), SqlError> {
    let DfStatement::Statement(s) = statement else { return Ok(()) };
    let found = visit_expressions(s.as_ref(), |e| match e {
        Expr::Function(f)
            if WINDOW_FUNCTIONS.contains(&function_name(f).as_str())
                || WINDOW_PROPERTIES.contains(&function_name(f).as_str()) =>
        {
            ControlFlow::Break(function_name(f))
        }
        _ => ControlFlow::Continue(()),
    });
    match found {
        ControlFlow::Break(name) => Err(unsupported(
            "window functions outside GROUP BY",
            format!(
                "`{name}` belongs to a windowed aggregation: group by the window in the top-level SELECT, \
                 e.g. `SELECT k, window_start, count(*) FROM t1 GROUP BY k, tumble(ts, INTERVAL '1' SECOND)`"
            ),
            sql,
        )),
        ControlFlow::Continue(()) => Ok(()),
    }
}

fn unsupported(clause: &'static str, reason: impl Into<String>, sql: &str) -> SqlError {
    SqlError::Unsupported { clause, reason: reason.into(), sql: sql.to_string() }
}

fn plan_error(message: impl Into<String>, sql: &str) -> SqlError {
    SqlError::Plan { message: message.into(), sql: sql.to_string(), source: None }
}

/// Refuses the clauses the window path does not evaluate, naming each.
fn check_clauses(query: &Query, select: &Select, sql: &str) -> Result<(), SqlError> {
    const HERE: &str = "is not supported in a windowed query";
    let checks: [(bool, &'static str, &str); 22] = [
        (query.with.is_some(), "WITH (common table expressions)", HERE),
        (query.order_by.is_some(), "ORDER BY", "is not supported: windows come out in the order they fire"),
        (query.limit_clause.is_some() || query.fetch.is_some(), "LIMIT / OFFSET / FETCH", HERE),
        (!query.locks.is_empty(), "FOR UPDATE / FOR SHARE", HERE),
        (query.for_clause.is_some(), "FOR XML / FOR JSON", HERE),
        (query.settings.is_some(), "SETTINGS", HERE),
        (query.format_clause.is_some(), "FORMAT", HERE),
        (!query.pipe_operators.is_empty(), "pipe operators", HERE),
        (
            select.distinct.is_some(),
            "DISTINCT",
            "is not supported in a windowed query (GROUP BY already gives one row per key and window)",
        ),
        (select.top.is_some(), "TOP", HERE),
        (select.into.is_some(), "SELECT INTO", HERE),
        (
            select.having.is_some(),
            "HAVING",
            "is not supported in a windowed query; filter the result downstream (e.g. a second stream.sql step)",
        ),
        (!select.named_window.is_empty(), "WINDOW (named windows)", HERE),
        (select.qualify.is_some(), "QUALIFY", HERE),
        (
            !select.sort_by.is_empty() || !select.cluster_by.is_empty() || !select.distribute_by.is_empty(),
            "SORT BY / CLUSTER BY / DISTRIBUTE BY",
            HERE,
        ),
        (!select.lateral_views.is_empty(), "LATERAL VIEW", HERE),
        (select.prewhere.is_some(), "PREWHERE", HERE),
        (!select.connect_by.is_empty(), "CONNECT BY", HERE),
        (select.exclude.is_some(), "EXCLUDE", HERE),
        (select.value_table_mode.is_some(), "SELECT AS VALUE / AS STRUCT", HERE),
        (select.flavor != SelectFlavor::Standard, "FROM-first SELECT", HERE),
        (select.from.is_empty(), "queries without FROM", "must read the input table"),
    ];
    for (bad, clause, reason) in checks {
        if bad {
            return Err(unsupported(clause, reason, sql));
        }
    }
    Ok(())
}

/// The plain arguments of a function call; anything else in the call is refused.
fn plain_args<'a>(f: &'a Function, what: &'static str, sql: &str) -> Result<Vec<&'a Expr>, SqlError> {
    let name = function_name(f);
    if f.over.is_some() {
        return Err(unsupported(
            "window functions (OVER ...)",
            format!("`{f}` is not supported in a windowed query"),
            sql,
        ));
    }
    if f.filter.is_some() {
        return Err(unsupported(
            "FILTER (WHERE ...)",
            format!("on `{name}` is not supported; filter rows in WHERE"),
            sql,
        ));
    }
    if f.null_treatment.is_some() || !f.within_group.is_empty() || !matches!(f.parameters, FunctionArguments::None) {
        return Err(unsupported(what, format!("`{f}`: only plain arguments are supported"), sql));
    }
    let list = match &f.args {
        FunctionArguments::List(list) => list,
        FunctionArguments::None => return Ok(Vec::new()),
        FunctionArguments::Subquery(_) => {
            return Err(unsupported("subqueries", format!("as the argument of `{name}` are not supported"), sql));
        }
    };
    if list.duplicate_treatment.is_some() {
        return Err(unsupported(
            "DISTINCT / ALL in aggregates",
            format!("`{f}` is not supported in a windowed query (supported: {SUPPORTED_AGGREGATES})"),
            sql,
        ));
    }
    if !list.clauses.is_empty() {
        return Err(unsupported(
            "clauses inside function arguments (ORDER BY, LIMIT, ...)",
            format!("`{f}` is not supported; first_value and last_value are by event time"),
            sql,
        ));
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(Some(e)),
            // `count(*)` counts rows, as `count()` does.
            FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if name == "count" && list.args.len() == 1 => Ok(None),
            _ => Err(unsupported(what, format!("`{f}`: named or wildcard arguments are not supported"), sql)),
        })
        .filter_map(Result::transpose)
        .collect()
}

/// Milliseconds of a literal `INTERVAL`, evaluated by DataFusion.
pub(crate) fn interval_ms(state: &SessionState, expr: &Expr, what: &str, sql: &str) -> Result<i64, SqlError> {
    let literal_only = || {
        unsupported(
            "non-literal window sizes",
            format!("the {what} `{expr}` must be a literal INTERVAL, e.g. INTERVAL '1' SECOND"),
            sql,
        )
    };
    if !matches!(expr, Expr::Interval(_)) {
        return Err(literal_only());
    }
    let planned = state
        .create_logical_expr_from_sql_expr(ExprWithAlias { expr: expr.clone(), alias: None }, &DFSchema::empty())
        .map_err(|e| plan_error(format!("the {what} `{expr}`: {e}"), sql))?;
    let DfExpr::Literal(value, _) = planned else { return Err(literal_only()) };
    let no_months = || {
        plan_error(
            format!("the {what} `{expr}` is in months or years, which have no fixed length in milliseconds"),
            sql,
        )
    };
    let ms: i128 = match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) => {
            if v.months != 0 {
                return Err(no_months());
            }
            if v.nanoseconds % 1_000_000 != 0 {
                return Err(plan_error(format!("the {what} `{expr}` is finer than a millisecond"), sql));
            }
            i128::from(v.days) * 86_400_000 + i128::from(v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => i128::from(v.days) * 86_400_000 + i128::from(v.milliseconds),
        ScalarValue::IntervalYearMonth(_) => return Err(no_months()),
        _ => return Err(literal_only()),
    };
    match i64::try_from(ms) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(plan_error(format!("the {what} `{expr}` must be positive (and under 2^63 ms)"), sql)),
    }
}

/// The columns the pre-projection computes: each distinct expression once.
#[derive(Default)]
struct PreProjection {
    /// (expression SQL, output name)
    items: Vec<(String, String)>,
}

impl PreProjection {
    fn column(&mut self, e: &Expr) -> String {
        let natural = match e {
            Expr::Identifier(id) => Some(id.value.clone()),
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
            _ => None,
        };
        self.add(e.to_string(), natural)
    }

    fn add(&mut self, text: String, natural: Option<String>) -> String {
        if let Some((_, name)) = self.items.iter().find(|(t, _)| *t == text) {
            return name.clone();
        }
        let name = match natural {
            Some(n)
                if !n.starts_with("__")
                    && ![WINDOW_START, WINDOW_END, IS_UPDATE].contains(&n.as_str())
                    && !self.items.iter().any(|(_, m)| *m == n) =>
            {
                n
            }
            _ => format!("__e{}", self.items.len()),
        };
        self.items.push((text, name.clone()));
        name
    }

    fn sql(&self, select: &Select) -> String {
        let items: Vec<String> = self.items.iter().map(|(t, n)| format!("{t} AS {}", quote(n))).collect();
        let from: Vec<String> = select.from.iter().map(|f| f.to_string()).collect();
        let mut sql = format!("SELECT {} FROM {}", items.join(", "), from.join(", "));
        if let Some(w) = &select.selection {
            sql.push_str(&format!(" WHERE {w}"));
        }
        sql
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggFn {
    CountRows,
    CountValues,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
}

/// What one SELECT item is.
enum Item {
    Start,
    End,
    IsUpdate,
    Key(String),
    Agg(usize),
}

struct AggSpec {
    function: AggFn,
    column: Option<String>,
    text: String,
}

fn is_window_column(e: &Expr, name: &str) -> bool {
    matches!(e, Expr::Identifier(id) if id.value.eq_ignore_ascii_case(name))
}

/// Plans a windowed query (see [`windowed_select`]) of `builder`.
pub(crate) async fn plan_windowed(
    builder: &SqlTransformBuilder,
    state: &SessionState,
    input: SchemaRef,
    query: &Query,
    select: &Select,
    sql: &str,
) -> Result<WindowedSql, SqlError> {
    check_clauses(query, select, sql)?;
    let exprs = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) => {
            if !modifiers.is_empty() {
                return Err(unsupported(
                    "GROUP BY ... WITH ROLLUP / CUBE / TOTALS",
                    "is not supported in a windowed query",
                    sql,
                ));
            }
            exprs
        }
        GroupByExpr::All(_) => return Err(unsupported("GROUP BY ALL", "is not supported in a windowed query", sql)),
    };

    // GROUP BY: one window, and keys.
    let mut window = None;
    let mut key_exprs = Vec::new();
    for e in exprs {
        if let Some(f) = window_call(e) {
            if window.is_some() {
                return Err(unsupported(
                    "two windows in GROUP BY",
                    "a query groups by one tumble(...) or hop(...)",
                    sql,
                ));
            }
            window = Some(f);
            continue;
        }
        match e {
            Expr::Value(_) => {
                return Err(unsupported("GROUP BY <position>", format!("`{e}`: name the column or expression"), sql));
            }
            Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_) => {
                return Err(unsupported("GROUPING SETS / CUBE / ROLLUP", "is not supported in a windowed query", sql));
            }
            _ if [WINDOW_START, WINDOW_END, IS_UPDATE].iter().any(|w| is_window_column(e, w)) => {
                return Err(unsupported(
                    "window columns in GROUP BY",
                    format!("`{e}` is a column of the window's result; group by tumble(...) or hop(...) instead"),
                    sql,
                ));
            }
            _ => key_exprs.push(e),
        }
    }
    let Some(window) = window else {
        return Err(unsupported("GROUP BY", "without tumble(...) or hop(...) needs state across batches", sql));
    };
    let window_name = function_name(window);
    let args = plain_args(window, "window function arguments", sql)?;
    let (time_expr, size, slide) = match (window_name.as_str(), args.as_slice()) {
        ("tumble", [ts, size]) => (*ts, interval_ms(state, size, "tumble size", sql)?, None),
        ("hop", [ts, slide, size]) => {
            let slide = interval_ms(state, slide, "hop slide", sql)?;
            (*ts, interval_ms(state, size, "hop size", sql)?, Some(slide))
        }
        ("tumble", _) => {
            return Err(plan_error(
                format!("`{window}`: tumble takes (time column, size), e.g. tumble(ts, INTERVAL '1' SECOND)"),
                sql,
            ));
        }
        _ => {
            return Err(plan_error(
                format!(
                    "`{window}`: hop takes (time column, slide, size) in Flink's order, e.g. hop(ts, INTERVAL '5' SECOND, INTERVAL '1' MINUTE)"
                ),
                sql,
            ));
        }
    };

    let mut pre = PreProjection::default();
    let time_column = pre.column(time_expr);
    let time_input_column = match time_expr {
        Expr::Identifier(id) => Some(id.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    };
    let key_texts: Vec<String> = key_exprs.iter().map(|e| e.to_string()).collect();
    let keys: Vec<String> = key_exprs.iter().map(|e| pre.column(e)).collect();
    let mut unique_keys = Vec::new();
    for k in &keys {
        if !unique_keys.contains(k) {
            unique_keys.push(k.clone());
        }
    }

    if unique_keys.is_empty() {
        // Keyed streams need a key column: without GROUP BY keys every row has the same one
        // (and one subtask does the windows, as in Flink's non-keyed windows).
        unique_keys.push(pre.add("0".into(), None));
    }

    // SELECT: window columns, keys and aggregates.
    let aggregate_names = state.aggregate_functions();
    let is_aggregate = |f: &Function| {
        let n = function_name(f);
        aggregate_names.contains_key(&n) || matches!(n.as_str(), "first_value" | "last_value")
    };
    let mut items: Vec<(String, Item)> = Vec::new();
    let mut aggs: Vec<AggSpec> = Vec::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            SelectItem::ExprWithAliases { .. } => {
                return Err(unsupported("multiple aliases", "are not supported in a windowed query", sql));
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                return Err(unsupported(
                    "SELECT *",
                    "in a windowed query: list the keys, window_start / window_end and the aggregates",
                    sql,
                ));
            }
        };
        let default_name = match expr {
            Expr::Identifier(id) => id.value.clone(),
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()).unwrap_or_default(),
            e if is_window_column(e, WINDOW_START) => WINDOW_START.into(),
            e => e.to_string(),
        };
        let name = alias.unwrap_or(default_name);
        let text = expr.to_string();
        let kind = if let Some(i) = key_texts.iter().position(|t| *t == text) {
            Item::Key(keys[i].clone())
        } else if is_window_column(expr, WINDOW_START) {
            Item::Start
        } else if is_window_column(expr, WINDOW_END) {
            Item::End
        } else if is_window_column(expr, IS_UPDATE) {
            Item::IsUpdate
        } else if is_window_column(expr, "window_time") || is_window_column(expr, "rowtime") {
            return Err(unsupported(
                "window time attributes",
                format!("`{expr}` is not supported; select window_start or window_end"),
                sql,
            ));
        } else if let Expr::Function(f) = expr
            && WINDOW_PROPERTIES.contains(&function_name(f).as_str())
        {
            let n = function_name(f);
            if !n.starts_with(&window_name) || f.args.to_string() != window.args.to_string() {
                return Err(plan_error(
                    format!(
                        "`{expr}` must repeat the GROUP BY's window `{window}` (or select window_start / window_end)"
                    ),
                    sql,
                ));
            }
            if n.ends_with("_start") { Item::Start } else { Item::End }
        } else if let Expr::Function(f) = expr
            && matches!(
                function_name(f).as_str(),
                "tumble_rowtime" | "tumble_proctime" | "hop_rowtime" | "hop_proctime"
            )
        {
            return Err(unsupported(
                "window time attributes",
                format!("`{expr}` is not supported; select window_start or window_end"),
                sql,
            ));
        } else if let Expr::Function(f) = expr
            && is_aggregate(f)
        {
            let n = function_name(f);
            let args = plain_args(f, "aggregate arguments", sql)?;
            let arg = match args.as_slice() {
                [a] => Some(*a),
                _ => None,
            };
            let one = |_: &[&Expr]| arg.ok_or_else(|| plan_error(format!("`{expr}` takes one argument"), sql));
            let (function, column) = match n.as_str() {
                "count" => match args.as_slice() {
                    [] => (AggFn::CountRows, None),
                    [Expr::Value(v)] if !matches!(v.value, datafusion::sql::sqlparser::ast::Value::Null) => {
                        (AggFn::CountRows, None)
                    }
                    [a] => {
                        let counted = format!("CASE WHEN ({a}) IS NULL THEN 0 ELSE 1 END");
                        (AggFn::CountValues, Some(pre.add(counted, None)))
                    }
                    _ => return Err(plan_error(format!("`{expr}` takes one argument"), sql)),
                },
                "sum" => (AggFn::Sum, Some(pre.column(one(&args)?))),
                "min" => (AggFn::Min, Some(pre.column(one(&args)?))),
                "max" => (AggFn::Max, Some(pre.column(one(&args)?))),
                "avg" | "mean" => (AggFn::Avg, Some(pre.column(one(&args)?))),
                "first_value" => (AggFn::First, Some(pre.column(one(&args)?))),
                "last_value" => (AggFn::Last, Some(pre.column(one(&args)?))),
                other => {
                    return Err(unsupported(
                        "this aggregate function",
                        format!("`{other}` is not supported in a windowed query (supported: {SUPPORTED_AGGREGATES})"),
                        sql,
                    ));
                }
            };
            aggs.push(AggSpec { function, column, text: text.clone() });
            Item::Agg(aggs.len() - 1)
        } else {
            let nested = visit_expressions(expr, |e| match e {
                Expr::Function(f) if is_aggregate(f) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            });
            if nested.is_break() {
                return Err(unsupported(
                    "expressions over aggregates",
                    format!("`{expr}` is not supported in a windowed query yet; select the aggregates themselves"),
                    sql,
                ));
            }
            let over_window = visit_expressions(expr, |e| {
                if [WINDOW_START, WINDOW_END].iter().any(|w| is_window_column(e, w)) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            if over_window.is_break() {
                return Err(unsupported(
                    "expressions over window_start / window_end",
                    format!("`{expr}` is not supported; select window_start or window_end themselves"),
                    sql,
                ));
            }
            return Err(plan_error(
                format!(
                    "`{expr}` in SELECT is neither a GROUP BY key, window_start / window_end nor an aggregate \
                     (to select an expression over keys, group by that expression)"
                ),
                sql,
            ));
        };
        if items.iter().any(|(n, _)| *n == name) {
            return Err(plan_error(format!("two SELECT items are named `{name}`; rename one with AS"), sql));
        }
        items.push((name, kind));
    }

    // The pre-projection, planned by DataFusion like any per-batch query.
    let pre_sql = pre.sql(select);
    let rewrite = |e: SqlError| match e {
        SqlError::Plan { message, source, .. } => SqlError::Plan { message, sql: sql.to_string(), source },
        SqlError::Unsupported { clause, reason, .. } => SqlError::Unsupported { clause, reason, sql: sql.to_string() },
        SqlError::Execution { message, source, .. } => SqlError::Execution { message, sql: sql.to_string(), source },
        other => other,
    };
    let pre_transform = Box::pin(builder.clone().with_sql(pre_sql).build_async()).await.map_err(rewrite)?;
    let pre_schema = pre_transform.output_schema();
    let type_of = |name: &str| -> Result<DataType, SqlError> {
        pre_schema
            .field_with_name(name)
            .map(|f| f.data_type().clone())
            .map_err(|e| plan_error(format!("the pre-projection has no column `{name}`: {e}"), sql))
    };
    let time_type = type_of(&time_column)?;
    if !is_time_type(&time_type) {
        return Err(plan_error(
            format!(
                "the time argument `{time_expr}` of `{window}` is {time_type}; it must be a Timestamp (or BigInt epoch milliseconds)"
            ),
            sql,
        ));
    }
    let groupable = |dt: &DataType| {
        matches!(
            dt,
            DataType::Boolean
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
        )
    };
    for (k, text) in keys.iter().zip(&key_texts) {
        let dt = type_of(k)?;
        if !groupable(&dt) {
            return Err(plan_error(format!("the GROUP BY key `{text}` is {dt}, which windows cannot group by"), sql));
        }
    }

    // Aggregations of the window operator, with the output types DataFusion gives them.
    let mut core_aggs = Vec::new();
    let mut agg_types = Vec::new();
    for (j, a) in aggs.iter().enumerate() {
        let alias = format!("__agg{j}");
        let input_type = a.column.as_deref().map(type_of).transpose()?;
        let numeric = |what: &str| -> Result<DataType, SqlError> {
            let dt = input_type.clone().unwrap_or(DataType::Null);
            let out = match (&dt, what) {
                (DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64, "sum") => DataType::Int64,
                (DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64, "sum") => DataType::UInt64,
                (DataType::Float16 | DataType::Float32 | DataType::Float64, "sum") => DataType::Float64,
                (dt, "avg") if dt.is_integer() || dt.is_floating() => DataType::Float64,
                _ => return Err(plan_error(format!("`{}`: {what} needs a number, the argument is {dt}", a.text), sql)),
            };
            Ok(out)
        };
        let same = || -> Result<DataType, SqlError> {
            let dt = input_type.clone().unwrap_or(DataType::Null);
            if groupable(&dt) {
                Ok(match dt {
                    DataType::Float16 => DataType::Float32,
                    dt => dt,
                })
            } else {
                Err(plan_error(format!("`{}`: the argument is {dt}, which windows cannot aggregate", a.text), sql))
            }
        };
        let column = a.column.clone().unwrap_or_default();
        let (agg, dt) = match a.function {
            AggFn::CountRows => (Agg::count(), DataType::Int64),
            AggFn::CountValues => (Agg::sum(column), DataType::Int64),
            AggFn::Sum => (Agg::sum(column), numeric("sum")?),
            AggFn::Avg => (Agg::avg(column), numeric("avg")?),
            AggFn::Min => (Agg::min(column), same()?),
            AggFn::Max => (Agg::max(column), same()?),
            AggFn::First => (Agg::first(column), same()?),
            AggFn::Last => (Agg::last(column), same()?),
        };
        core_aggs.push(agg.alias(alias));
        agg_types.push(dt);
    }
    if core_aggs.is_empty() {
        // The window operator computes at least one aggregation; this one is not selected.
        core_aggs.push(Agg::count().alias("__agg_rows"));
    }
    let duration = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let windows = match slide {
        None => Windows::tumbling_event_time(&time_column, duration(size)),
        Some(slide) => Windows::sliding_event_time(&time_column, duration(size), duration(slide)),
    }
    .aggregate(core_aggs);
    windows.validate().map_err(|e| plan_error(format!("`{window}`: {e}"), sql))?;

    let timestamp = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None);
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (name, item) in &items {
        let (source, dt, nullable) = match item {
            Item::Start => (WINDOW_START.to_string(), timestamp.clone(), false),
            Item::End => (WINDOW_END.to_string(), timestamp.clone(), false),
            Item::IsUpdate => (IS_UPDATE.to_string(), DataType::Boolean, false),
            Item::Key(k) => (k.clone(), type_of(k)?, true),
            Item::Agg(j) => (format!("__agg{j}"), agg_types[*j].clone(), true),
        };
        fields.push(Field::new(name, dt, nullable));
        columns.push(source);
    }
    Ok(WindowedSql {
        sql: sql.to_string(),
        input,
        pre: pre_transform,
        keys: unique_keys,
        windows,
        time_input_column,
        columns,
        output: Arc::new(Schema::new(fields)),
        watermark: None,
    })
}

/// Parses a watermark declaration: `<column>,<delay>` with the delay as `200ms`, `5s`,
/// `1m`, `1h` (or `0`), or Flink's DDL form `<column> - INTERVAL '5' SECOND` (or just
/// `<column>` for no delay). The result is a bounded-out-of-orderness generator.
///
/// ```
/// use std::time::Duration;
/// use operators_core::window::WatermarkGenerator;
/// use operators_sql::parse_watermark;
///
/// let expected = WatermarkGenerator::bounded_out_of_orderness("ts", Duration::from_millis(200));
/// assert_eq!(parse_watermark("ts,200ms").unwrap(), expected);
/// assert_eq!(parse_watermark("ts - INTERVAL '0.2' SECOND").unwrap(), expected);
/// assert!(parse_watermark("ts,5 parsecs").is_err());
/// ```
pub fn parse_watermark(text: &str) -> Result<WatermarkGenerator, SqlError> {
    let text = text.trim();
    if let Some((column, delay)) = text.rsplit_once(',') {
        let column = column.trim().trim_matches('`').trim_matches('"');
        if column.is_empty() {
            return Err(SqlError::Watermark(format!("`{text}` names no column; write <column>,<delay> (ts,200ms)")));
        }
        return Ok(WatermarkGenerator::bounded_out_of_orderness(column, parse_delay(delay.trim())?));
    }
    // Flink's DDL form, parsed by DataFusion's SQL parser and its interval arithmetic.
    let state = datafusion::execution::context::SessionContext::new().state();
    let dialect = state.config_options().sql_parser.dialect;
    let bad = |why: String| {
        SqlError::Watermark(format!(
            "`{text}`: {why}; write <column>,<delay> (ts,200ms) or <column> - INTERVAL '<n>' <unit>"
        ))
    };
    let expr = state.sql_to_expr(text, &dialect).map_err(|e| bad(e.to_string()))?;
    let column_of = |e: &Expr| match e {
        Expr::Identifier(id) => Some(id.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.clone()),
        _ => None,
    };
    let (column, delay) = match &expr {
        Expr::BinaryOp { left, op: BinaryOperator::Minus, right } => {
            let column = column_of(left).ok_or_else(|| bad(format!("`{left}` is not a column")))?;
            let ms = interval_ms(&state, right, "watermark delay", text).map_err(|e| bad(e.to_string()))?;
            (column, Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
        }
        e => (column_of(e).ok_or_else(|| bad("not a column with a delay".into()))?, Duration::ZERO),
    };
    Ok(WatermarkGenerator::bounded_out_of_orderness(column, delay))
}

/// `200ms`, `5s`, `1m`, `2h`, `0`.
fn parse_delay(text: &str) -> Result<Duration, SqlError> {
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let bad = || SqlError::Watermark(format!("the delay `{text}` is not a duration like 200ms, 5s, 1m or 1h"));
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" | "min" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "" if n == 0 => Some(0),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse() {
        assert_eq!(parse_delay("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_delay("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_delay("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_delay("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "ms", "-1s", "1.5s", "5 parsecs", "99999999999999999999h"] {
            assert!(parse_delay(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn watermarks_parse_in_both_forms() {
        let w = |c: &str, ms| WatermarkGenerator::bounded_out_of_orderness(c, Duration::from_millis(ms));
        assert_eq!(parse_watermark("ts,200ms").unwrap(), w("ts", 200));
        assert_eq!(parse_watermark(" ts , 5s ").unwrap(), w("ts", 5000));
        assert_eq!(parse_watermark("ts - INTERVAL '5' SECOND").unwrap(), w("ts", 5000));
        assert_eq!(parse_watermark("event_time - interval '1' minute").unwrap(), w("event_time", 60_000));
        assert_eq!(parse_watermark("ts").unwrap(), w("ts", 0));
        for bad in [",5s", "ts,", "ts - 5", "1 + 2", "ts - INTERVAL '1' MONTH", "ts -"] {
            let e = parse_watermark(bad).unwrap_err().to_string();
            assert!(e.contains("watermark") || e.contains("delay"), "{bad}: {e}");
        }
    }
}
