//! Every tool's `outputSchema` describes the `structuredContent` it really returns: each tool is
//! called on a temp copy of examples/workspace (reads, task.update, change.archive clean and
//! forced, and the null/absent branches) and each answer is checked against the declared schema
//! by the small validator below, which knows exactly the keywords the schemas use and refuses
//! any other, so a schema cannot say something the check silently skips.

mod common;
use common::*;

use backend::openspec::Workspace;
use backend::tools::{NoProgress, Registry};
use serde_json::{json, Value};
use std::collections::BTreeSet;

// ---- the validator: type (incl. type arrays), properties, required, additionalProperties,
// ---- items, enum, minimum; `description` is an annotation.

const KNOWN_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minimum",
    "description",
];

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        other => panic!("schema uses unknown type {other:?}"),
    }
}

/// Every violation, each as `path: what`; empty when `v` conforms.
fn validate(schema: &Value, v: &Value, path: &str) -> Vec<String> {
    let Some(s) = schema.as_object() else {
        panic!("{path}: schema is not an object: {schema}");
    };
    for key in s.keys() {
        assert!(
            KNOWN_KEYWORDS.contains(&key.as_str()),
            "{path}: the validator does not know the keyword {key:?}"
        );
    }
    let mut errors = Vec::new();
    if let Some(t) = s.get("type") {
        let names: Vec<&str> = match t {
            Value::String(n) => vec![n.as_str()],
            Value::Array(ns) => ns.iter().map(|n| n.as_str().unwrap()).collect(),
            other => panic!("{path}: bad type keyword {other}"),
        };
        if !names.iter().any(|n| type_matches(n, v)) {
            errors.push(format!("{path}: expected {names:?}, got {v}"));
            return errors;
        }
    }
    if let Some(Value::Array(allowed)) = s.get("enum") {
        if !allowed.contains(v) {
            errors.push(format!("{path}: {v} not in {allowed:?}"));
        }
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if n < min {
            errors.push(format!("{path}: {n} < minimum {min}"));
        }
    }
    if let Value::Object(obj) = v {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = s.get("required") {
            for r in required {
                let r = r.as_str().unwrap();
                if !obj.contains_key(r) {
                    errors.push(format!("{path}: missing required {r:?}"));
                }
            }
        }
        for (k, child) in obj {
            let child_path = format!("{path}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(sub) => errors.extend(validate(sub, child, &child_path)),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{child_path}: not allowed (additionalProperties)"))
                    }
                    Some(sub @ Value::Object(_)) => {
                        errors.extend(validate(sub, child, &child_path))
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (v, s.get("items")) {
        for (i, item) in items.iter().enumerate() {
            errors.extend(validate(item_schema, item, &format!("{path}[{i}]")));
        }
    }
    errors
}

#[test]
fn the_validator_rejects_missing_mistyped_extra_and_out_of_enum_values() {
    let schema = json!({
        "type": "object",
        "properties": {
            "id": { "type": ["string", "null"] },
            "n": { "type": "integer", "minimum": 0 },
            "state": { "enum": ["open", "done"] },
            "tags": { "type": "array", "items": { "type": "string" } }
        },
        "required": ["id", "n"],
        "additionalProperties": false
    });
    let ok = json!({"id": null, "n": 3, "state": "open", "tags": ["a"]});
    assert_eq!(validate(&schema, &ok, "$"), Vec::<String>::new());
    assert_eq!(
        validate(&schema, &json!({"id": "1.3", "n": 0}), "$").len(),
        0
    );
    let bad = [
        (json!({"n": 3}), "missing required \"id\""),
        (json!({"id": 1, "n": 3}), "$.id: expected"),
        (json!({"id": null, "n": 1.5}), "$.n: expected"),
        (json!({"id": null, "n": -1}), "minimum"),
        (json!({"id": null, "n": 1, "x": 1}), "$.x: not allowed"),
        (json!({"id": null, "n": 1, "state": "gone"}), "not in"),
        (
            json!({"id": null, "n": 1, "tags": ["a", 2]}),
            "$.tags[1]: expected",
        ),
        (json!([]), "$: expected"),
    ];
    for (value, why) in bad {
        let errors = validate(&schema, &value, "$");
        assert!(
            errors.iter().any(|e| e.contains(why)),
            "{value} should fail with {why:?}, got {errors:?}"
        );
    }
}

/// Calls one tool, checks its structured output against its declared schema, and returns it.
struct Checker {
    reg: Registry,
    checked: BTreeSet<&'static str>,
}

impl Checker {
    fn schema(&self, tool: &str) -> &Value {
        let def = self.reg.get(tool).unwrap();
        let schema = def.output_schema.as_ref().unwrap_or_else(|| {
            panic!("{tool} declares no outputSchema");
        });
        assert_eq!(schema["type"], "object", "{tool}: outputSchema type");
        schema
    }

    fn call(&mut self, tool: &str, input: Value) -> Value {
        let out = self
            .reg
            .call(tool, input.clone(), &NoProgress)
            .unwrap_or_else(|e| panic!("{tool} {input}: {e}"));
        let errors = validate(self.schema(tool), &out.structured, "$");
        assert!(
            errors.is_empty(),
            "{tool} {input}: output does not match its outputSchema:\n{}\n{}",
            errors.join("\n"),
            out.structured
        );
        // The schema is tight enough to notice a broken answer: each top-level field removed
        // (when required) or replaced by a value of another type is refused.
        let schema = self.schema(tool);
        let obj = out.structured.as_object().unwrap();
        for key in obj.keys() {
            let mut wrong = out.structured.clone();
            wrong[key.as_str()] = json!({"wrong": [1]});
            assert!(
                !validate(schema, &wrong, "$").is_empty(),
                "{tool}: {key} mistyped passes"
            );
        }
        for key in schema["required"].as_array().unwrap() {
            let mut missing = out.structured.clone();
            missing
                .as_object_mut()
                .unwrap()
                .remove(key.as_str().unwrap());
            assert!(
                !validate(schema, &missing, "$").is_empty(),
                "{tool}: missing {key} passes"
            );
        }
        let name = self.reg.get(tool).unwrap().name;
        self.checked.insert(name);
        out.structured
    }
}

#[test]
fn every_tool_returns_what_its_output_schema_declares() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let changes = dir.path().join("openspec/changes");
    // Null branches the fixture lacks: a checkbox without a number outside any section, and a
    // change with no tasks.md.
    std::fs::write(
        changes.join("add-webhooks/tasks.md"),
        "- [ ] unnumbered first\n\n## 1. Work\n- [x] 1.1 Numbered\n",
    )
    .unwrap();
    std::fs::remove_file(changes.join("rework-notification-digest/tasks.md")).unwrap();
    let mut c = Checker {
        reg: Registry::new(Workspace::open(dir.path()).unwrap()),
        checked: BTreeSet::new(),
    };

    let listed = c.call("change.list", json!({}));
    assert!(listed.get("archived").is_none());
    let listed = c.call("change.list", json!({"include_archived": true}));
    assert!(!listed["archived"].as_array().unwrap().is_empty());

    let slugs: Vec<String> = listed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| ch["slug"].as_str().unwrap().to_string())
        .collect();
    assert!(slugs.len() >= 4, "{slugs:?}");
    let mut designs = BTreeSet::new();
    for slug in &slugs {
        let opened = c.call("change.open", json!({"slug": slug}));
        designs.insert(opened["design"].is_null());
        c.call("task.list", json!({"slug": slug}));
    }
    assert_eq!(designs.len(), 2, "design seen both present and null");

    let webhooks = c.call("task.list", json!({"slug": "add-webhooks"}));
    assert_eq!(webhooks["tasks"][0]["id"], Value::Null);
    assert_eq!(webhooks["tasks"][0]["section"], Value::Null);
    let no_file = c.call("task.list", json!({"slug": "rework-notification-digest"}));
    assert_eq!(no_file["hasTasksFile"], json!(false));

    let tasks = c.call("task.list", json!({"slug": "add-task-due-dates"}));
    let open = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["done"] == json!(false))
        .unwrap()["id"]
        .clone();
    let ticked = c.call(
        "task.update",
        json!({"slug": "add-task-due-dates", "id": open, "done": true}),
    );
    assert_eq!(ticked["changed"], json!(true));
    let again = c.call(
        "task.update",
        json!({"slug": "add-task-due-dates", "id": open, "done": true}),
    );
    assert_eq!(again["changed"], json!(false));

    let specs = c.call("spec.list", json!({}));
    for s in specs["specs"].as_array().unwrap() {
        c.call("spec.open", json!({"capability": s["capability"]}));
    }

    let archived = c.call("change.archive", json!({"slug": "add-two-factor-auth"}));
    assert_eq!(archived["forced"], json!(false));
    let forced = c.call(
        "change.archive",
        json!({"slug": "add-task-due-dates", "force": true}),
    );
    assert_eq!(forced["forced"], json!(true));
    // After archiving, the lists still match (new specs, more archived changes).
    c.call("change.list", json!({"include_archived": true}));
    c.call("spec.list", json!({}));

    let all: BTreeSet<&str> = c.reg.list().iter().map(|d| d.name).collect();
    assert_eq!(c.checked, all, "every tool was called and checked");
}
