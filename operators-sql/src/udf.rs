//! User-defined functions: the toolkit's `arraySplit`, and how to add more.
//!
//! `arraySplit(s)` / `arraySplit(s, sep)` splits a string into a list of strings at every
//! occurrence of `sep` (default `,`), keeping empty pieces: `arraySplit('t1|t2', '|')`
//! is `["t1","t2"]`, `arraySplit('a,,b')` is `["a","","b"]`. The separator is literal
//! text, not a regular expression. A null string or separator gives null; an empty
//! separator gives the whole string as the only element.
//!
//! Any DataFusion [`ScalarUDF`] can be added to a query with
//! [`SqlTransformBuilder::with_udf`](crate::SqlTransformBuilder::with_udf), the same way.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// The `arraySplit` function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ArraySplit {
    signature: Signature,
    aliases: Vec<String>,
}

impl Default for ArraySplit {
    fn default() -> Self {
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::String(1), TypeSignature::String(2)],
                Volatility::Immutable,
            ),
            // SQL folds unquoted function names to lower case; the alias serves `"arraySplit"(...)`.
            aliases: vec!["arraySplit".to_string()],
        }
    }
}

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn to_utf8(value: &ColumnarValue, rows: usize) -> DfResult<ArrayRef> {
    let array = value.to_array(rows)?;
    Ok(match array.data_type() {
        DataType::Utf8 => array,
        _ => arrow::compute::cast(&array, &DataType::Utf8)?,
    })
}

impl ScalarUDFImpl for ArraySplit {
    fn name(&self) -> &str {
        "arraysplit"
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(list_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let strings = match args.args.first() {
            Some(v) => to_utf8(v, rows)?,
            None => return exec_err!("arraySplit needs a string argument"),
        };
        let strings = strings.as_string::<i32>();
        let seps = match args.args.get(1) {
            Some(v) => Some(to_utf8(v, rows)?),
            None => None,
        };
        let seps = seps.as_ref().map(|s| s.as_string::<i32>());
        let mut builder = ListBuilder::with_capacity(StringBuilder::new(), rows);
        for row in 0..rows {
            let sep = match seps {
                Some(s) if s.is_null(row) => None,
                Some(s) => Some(s.value(row)),
                None => Some(","),
            };
            match (strings.is_null(row), sep) {
                (false, Some(sep)) => {
                    let s = strings.value(row);
                    if sep.is_empty() {
                        builder.values().append_value(s);
                    } else {
                        for piece in s.split(sep) {
                            builder.values().append_value(piece);
                        }
                    }
                    builder.append(true);
                }
                _ => builder.append(false),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(builder.finish())))
    }
}

/// `arraySplit` as a registrable UDF.
pub fn array_split() -> ScalarUDF {
    ScalarUDF::from(ArraySplit::default())
}

/// Every UDF of the toolkit.
pub fn builtin_udfs() -> Vec<ScalarUDF> {
    vec![array_split()]
}
