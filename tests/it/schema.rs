//! `scopegate schema`: every configuration file the repository ships validates against the
//! schema of its kind, and the schema is strict (an unknown key fails it).

use std::path::Path;

use crate::util::{repo, scopegate};

fn validator(kind: &str) -> jsonschema::Validator {
    let (ok, out, err) = scopegate(&["schema", kind]);
    assert!(ok, "{err}");
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn yaml(text: &str) -> serde_json::Value {
    serde_yaml::from_str(text).unwrap()
}

fn assert_valid(v: &jsonschema::Validator, instance: &serde_json::Value, what: &str) {
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}");
}

fn yaml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_configuration_file_validates_against_its_schema() {
    let (server, policy, data) = (validator("server"), validator("policy"), validator("data"));
    let mut checked = 0;
    for file in yaml_files(&repo().join("policies")) {
        assert_valid(
            &policy,
            &yaml(&std::fs::read_to_string(&file).unwrap()),
            &file.display().to_string(),
        );
        checked += 1;
    }
    for file in yaml_files(&repo().join("policies/data")) {
        assert_valid(
            &data,
            &yaml(&std::fs::read_to_string(&file).unwrap()),
            &file.display().to_string(),
        );
        checked += 1;
    }
    assert_valid(
        &server,
        &yaml(&std::fs::read_to_string(repo().join("deploy/scopegate.yaml")).unwrap()),
        "deploy/scopegate.yaml",
    );
    checked += 1;
    // The configuration files carried by the Kubernetes ConfigMaps.
    for file in yaml_files(&repo().join("deploy/kubernetes")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if doc["kind"] != "ConfigMap" {
                continue;
            }
            for (key, value) in doc["data"].as_object().into_iter().flatten() {
                let Some(text) = value.as_str().filter(|_| key.ends_with(".yaml")) else {
                    continue;
                };
                let instance = yaml(text);
                let which = if key == "scopegate.yaml" {
                    &server
                } else if instance.get("organizations").is_some() {
                    &data
                } else {
                    &policy
                };
                assert_valid(which, &instance, &format!("{} {key}", file.display()));
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} files checked");
}

#[test]
fn the_schema_is_strict() {
    let policy = validator("policy");
    let typo =
        yaml("routes:\n  - name: x\n    match: { path: /x }\n    upstrem: api\n    require: {}\n");
    assert!(!policy.is_valid(&typo), "an unknown key fails the schema");
    let route =
        "routes:\n  - name: x\n    match: { path: /x }\n    upstream: api\n    require: {}\n";
    for websocket in ["true", "false", "{ idle_timeout: 5m, max_lifetime: 1h }"] {
        let with = yaml(&format!("{route}    websocket: {websocket}\n"));
        assert_valid(&policy, &with, websocket);
    }
    for wrong in ["{ idle_timout: 5m }", "yes", "[1m]"] {
        let with = yaml(&format!("{route}    websocket: {wrong}\n"));
        assert!(
            !policy.is_valid(&with),
            "websocket: {wrong} fails the schema"
        );
    }
    let server = validator("server");
    assert!(
        !server.is_valid(&yaml("listen: { proxy: 1 }\n")),
        "missing and mistyped fields fail"
    );
}
