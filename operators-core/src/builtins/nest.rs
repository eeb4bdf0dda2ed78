//! The toolkit's "merge" step: nest all fields but a few into one struct field.
//!
//! `id,name,k1 / 1,n1,v1` with the defaults (nested field `feas`, excluded `id`) becomes
//! `{"id":"1","feas":{"name":"n1","k1":"v1"}}`: excluded fields stay at the top level in
//! their original order, every other field moves, in order, into the struct.

use std::sync::Arc;

use arrow::array::{ArrayRef, StructArray};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::operator::{OperatorContext, TaskInfo, Transform, TransformFactory};

/// Nests fields into one struct field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestTransform {
    nested_field: String,
    exclude: Vec<String>,
}

impl Default for NestTransform {
    fn default() -> Self {
        Self { nested_field: "feas".into(), exclude: vec!["id".into()] }
    }
}

struct Plan {
    input: SchemaRef,
    output: SchemaRef,
    top: Vec<usize>,
    nested: Vec<usize>,
    nested_fields: Fields,
}

impl NestTransform {
    /// Nest into `feas`, keeping `id` at the top level.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the name of the struct field (default `feas`).
    pub fn with_nested_field(mut self, name: impl Into<String>) -> Self {
        self.nested_field = name.into();
        self
    }

    /// Sets the fields kept at the top level (default `id`).
    pub fn with_exclude<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Checks the settings on their own.
    pub fn validate(&self) -> Result<()> {
        if self.nested_field.trim().is_empty() {
            return Err(Error::config("nest.nested-field", "must not be empty"));
        }
        if self.exclude.contains(&self.nested_field) {
            return Err(Error::config(
                "nest.nested-field",
                format!("`{}` is also an excluded field", self.nested_field),
            ));
        }
        Ok(())
    }

    fn plan(&self, input: &SchemaRef) -> Result<Plan> {
        self.validate()?;
        let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
        for ex in &self.exclude {
            if !names.contains(&ex.as_str()) {
                return Err(Error::config(
                    "nest.exclude",
                    format!("excluded field `{ex}` is not in the stream (columns: {})", names.join(", ")),
                ));
            }
        }
        let (top, nested): (Vec<usize>, Vec<usize>) =
            (0..input.fields().len()).partition(|&i| self.exclude.iter().any(|e| e == input.field(i).name()));
        if top.iter().any(|&i| input.field(i).name() == &self.nested_field) {
            return Err(Error::config(
                "nest.nested-field",
                format!("`{}` collides with a field kept at the top level", self.nested_field),
            ));
        }
        let nested_fields: Fields = nested.iter().map(|&i| input.fields()[i].clone()).collect();
        let mut fields: Vec<Arc<Field>> = top.iter().map(|&i| input.fields()[i].clone()).collect();
        fields.push(Arc::new(Field::new(&self.nested_field, DataType::Struct(nested_fields.clone()), true)));
        Ok(Plan { input: input.clone(), output: Arc::new(Schema::new(fields)), top, nested, nested_fields })
    }

    /// The output schema for `input`.
    pub fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.plan(input)?.output)
    }

    fn apply(plan: &Plan, batch: &RecordBatch) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = plan.top.iter().map(|&i| batch.column(i).clone()).collect();
        let children: Vec<ArrayRef> = plan.nested.iter().map(|&i| batch.column(i).clone()).collect();
        let nested = if children.is_empty() {
            StructArray::new_empty_fields(batch.num_rows(), None)
        } else {
            StructArray::try_new(plan.nested_fields.clone(), children, None)
                .map_err(|e| Error::arrow("nesting fields", e))?
        };
        columns.push(Arc::new(nested));
        RecordBatch::try_new(plan.output.clone(), columns).map_err(|e| Error::arrow("nesting fields", e))
    }

    /// Nests one batch.
    pub fn nest(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        Self::apply(&self.plan(&batch.schema())?, batch)
    }
}

struct NestTask {
    spec: NestTransform,
    plan: Option<Plan>,
}

#[async_trait]
impl Transform for NestTask {
    async fn process_batch(&mut self, batch: RecordBatch, ctx: &mut OperatorContext) -> Result<()> {
        let schema = batch.schema();
        if self.plan.as_ref().is_none_or(|p| p.input != schema) {
            self.plan = Some(self.spec.plan(&schema)?);
        }
        if let Some(plan) = &self.plan {
            ctx.emit(NestTransform::apply(plan, &batch)?);
        }
        Ok(())
    }
}

impl TransformFactory for NestTransform {
    fn create(&self, _info: &TaskInfo) -> Result<Box<dyn Transform>> {
        self.validate()?;
        Ok(Box::new(NestTask { spec: self.clone(), plan: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::JsonEncoder;
    use arrow::array::StringArray;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("k1", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["1"])),
                Arc::new(StringArray::from(vec!["n1"])),
                Arc::new(StringArray::from(vec!["v1"])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn the_toolkit_example() {
        let out = NestTransform::new().nest(&batch()).unwrap();
        let mut json = Vec::new();
        JsonEncoder::new().encode_lines(&out, &mut json).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), "{\"id\":\"1\",\"feas\":{\"name\":\"n1\",\"k1\":\"v1\"}}\n");
    }

    #[test]
    fn several_excluded_and_custom_name() {
        let out = NestTransform::new().with_exclude(["k1", "id"]).with_nested_field("rest").nest(&batch()).unwrap();
        let schema = out.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["id", "k1", "rest"]);
    }

    #[test]
    fn missing_excluded_field_and_collisions_are_refused() {
        let err = NestTransform::new().with_exclude(["uid"]).nest(&batch()).unwrap_err().to_string();
        assert!(err.contains("`uid`") && err.contains("columns: id, name, k1"), "{err}");
        let err = NestTransform::new().with_nested_field("id").validate().unwrap_err().to_string();
        assert!(err.contains("nest.nested-field"), "{err}");
    }
}
