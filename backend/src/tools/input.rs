//! Reading a tool's input object; every error names the field (`input.slug: ...`).

use super::ToolError;
use crate::openspec::paths;
use serde_json::{Map, Value};

pub struct Input {
    fields: Map<String, Value>,
}

impl Input {
    /// `input` must be an object (or null/absent, read as `{}`); fields not in the schema's
    /// `properties` are refused so a typo (`slgu`) is reported instead of ignored.
    pub fn new(input: Value, properties: Option<&Value>) -> Result<Input, ToolError> {
        let fields = match input {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(ToolError::invalid_input(format!(
                    "input: must be an object, got {}",
                    type_name(&other)
                )))
            }
        };
        if let Some(Value::Object(known)) = properties {
            if let Some(unknown) = fields.keys().find(|k| !known.contains_key(k.as_str())) {
                let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(
                    ToolError::invalid_input(format!("input.{unknown}: unknown field"))
                        .with_hint(format!("known fields: {}", names.join(", "))),
                );
            }
        }
        Ok(Input { fields })
    }

    fn required(&self, field: &str) -> Result<&Value, ToolError> {
        self.fields
            .get(field)
            .ok_or_else(|| ToolError::invalid_input(format!("input.{field}: required")))
    }

    pub fn str(&self, field: &str) -> Result<&str, ToolError> {
        match self.required(field)? {
            Value::String(s) => Ok(s),
            other => Err(ToolError::invalid_input(format!(
                "input.{field}: must be a string, got {}",
                type_name(other)
            ))),
        }
    }

    pub fn bool(&self, field: &str) -> Result<bool, ToolError> {
        match self.required(field)? {
            Value::Bool(b) => Ok(*b),
            other => Err(ToolError::invalid_input(format!(
                "input.{field}: must be a boolean, got {}",
                type_name(other)
            ))),
        }
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, ToolError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.bool(field).map(Some),
        }
    }

    /// Whether the field is present (even as null).
    pub fn has(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// Present and `null`.
    pub fn is_null(&self, field: &str) -> bool {
        matches!(self.fields.get(field), Some(Value::Null))
    }

    /// Absent or null: `None`; otherwise the value as given (for fields of other shapes).
    pub fn opt_value(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// Absent or null: `None`; otherwise a string.
    pub fn opt_str(&self, field: &str) -> Result<Option<&str>, ToolError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(field).map(Some),
        }
    }

    /// Absent or null: `None`; otherwise an integer in `min..=max`.
    pub fn opt_int(&self, field: &str, min: i64, max: i64) -> Result<Option<i64>, ToolError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                Some(_) => Err(ToolError::invalid_input(format!(
                    "input.{field}: must be between {min} and {max}"
                ))),
                None => Err(ToolError::invalid_input(format!(
                    "input.{field}: must be an integer"
                ))),
            },
            Some(other) => Err(ToolError::invalid_input(format!(
                "input.{field}: must be an integer, got {}",
                type_name(other)
            ))),
        }
    }

    /// A change slug or capability name: `^[a-z0-9][a-z0-9-]{0,63}$`, so it cannot hold `/`,
    /// `..` or an absolute path.
    pub fn name(&self, field: &str) -> Result<&str, ToolError> {
        let value = self.str(field)?;
        paths::check_name(value).map_err(|why| {
            ToolError::invalid_input(format!("input.{field}: {why}")).with_hint(format!(
                "{field} is a folder name like \"add-two-factor-auth\""
            ))
        })?;
        Ok(value)
    }

    /// A task id like "1.3".
    pub fn task_id(&self, field: &str) -> Result<&str, ToolError> {
        let value = self.str(field)?;
        if crate::openspec::tasks::is_task_id(value) {
            Ok(value)
        } else {
            Err(ToolError::invalid_input(format!(
                "input.{field}: must match ^[0-9]+(\\.[0-9]+)*$ (like \"1.3\")"
            )))
        }
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
