//! `deploy/`: the Kubernetes manifests pass `kubernetes-validate --strict`; what that tool has no
//! schema for (Traefik's CRDs) and what schemas cannot say (the forward-auth wiring, the pod
//! hardening, the Envoy filter) is checked here; and the scopegate configuration each ConfigMap
//! carries passes `scopegate check` laid out exactly as the pod mounts it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

use crate::util::{repo, scopegate};

/// The oldest Kubernetes release the manifests are meant for; `kubernetes-validate --help`
/// lists the versions it knows.
const KUBERNETES_VERSION: &str = "1.30.0";

/// API groups whose kinds are CRDs: `kubernetes-validate` has no schema for them (it warns and
/// passes), so [`traefik_crds_have_their_essential_fields`] checks them.
const CRD_GROUPS: &[&str] = &["traefik.io/", "cert-manager.io/"];

/// The headers scopegate's decision answer carries for the proxy to copy upstream.
const RESPONSE_HEADERS: &[&str] = &[
    "Authorization",
    "X-Scopegate-Subject",
    "X-Scopegate-Organization",
    "X-Scopegate-Scope",
    "X-Scopegate-Route",
];

/// What every scopegate container runs: the image's default command (deploy/Dockerfile).
const SERVE: &[&str] = &["serve", "--config", "/etc/scopegate/scopegate.yaml"];

#[test]
fn kubernetes_manifests_pass_kubernetes_validate_strict() {
    let Some(tool) = find_in_path("kubernetes-validate") else {
        panic!(
            "`kubernetes-validate` is not on PATH: run scripts/test, which installs it \
             (python3 -m pip install kubernetes-validate)"
        );
    };
    let files = manifests();
    let out = Command::new(&tool)
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{stdout}{stderr}"
    );
    assert!(
        !stdout.contains("ERROR") && !stdout.contains("FATAL"),
        "{stdout}{stderr}"
    );

    // It exits 0 for a kind it has no schema for: insist that every document was really
    // validated, except the CRDs checked in Rust below.
    let version = KUBERNETES_VERSION.rsplit_once('.').unwrap().0;
    for file in &files {
        for doc in documents(file) {
            let (api_version, kind) = (s(&doc, "apiVersion"), s(&doc, "kind"));
            let line = if CRD_GROUPS.iter().any(|g| api_version.starts_with(g)) {
                format!(
                    "WARN {} Couldn't find schema for kind {kind} with api version {api_version}",
                    file.display()
                )
            } else {
                format!(
                    "INFO {} passed for resource {}/{} against version {version}",
                    file.display(),
                    kind.to_lowercase(),
                    name(&doc)
                )
            };
            assert!(
                stdout.lines().any(|l| l.starts_with(&line)),
                "no `{line}` in:\n{stdout}{stderr}"
            );
        }
    }
}

#[test]
fn traefik_crds_have_their_essential_fields() {
    let file = repo().join("deploy/kubernetes/traefik.yaml");
    let docs = documents(&file);
    let auth_port = forward_auth_port(&docs);
    let mut middlewares = Vec::new();
    for doc in all_documents() {
        let api_version = s(&doc, "apiVersion");
        if !CRD_GROUPS.iter().any(|g| api_version.starts_with(g)) {
            continue;
        }
        let kind = s(&doc, "kind");
        match kind {
            "Middleware" => {
                assert_eq!(api_version, "traefik.io/v1alpha1");
                assert!(!name(&doc).is_empty() && !namespace(&doc).is_empty());
                let auth = &doc["spec"]["forwardAuth"];
                let address = auth["address"].as_str().unwrap();
                assert_eq!(
                    address,
                    format!("http://scopegate-auth.scopegate.svc.cluster.local:{auth_port}/"),
                    "the Middleware must ask scopegate's auth port"
                );
                assert_eq!(auth["trustForwardHeader"], Value::Bool(false));
                assert_eq!(
                    strings(&auth["authResponseHeaders"]),
                    RESPONSE_HEADERS,
                    "{}",
                    name(&doc)
                );
                // A client's own X-Original-* headers must not reach scopegate through Traefik.
                let request = strings(&auth["authRequestHeaders"]);
                assert!(request.contains(&"Authorization"), "{request:?}");
                assert!(
                    request
                        .iter()
                        .all(|h| !h.to_ascii_lowercase().starts_with("x-original-")
                            && !h.to_ascii_lowercase().starts_with("x-forwarded-")),
                    "{request:?}"
                );
                middlewares.push(format!("{}-{}@kubernetescrd", namespace(&doc), name(&doc)));
            }
            "IngressRoute" => {
                assert_eq!(api_version, "traefik.io/v1alpha1");
                assert!(!name(&doc).is_empty());
                let routes = doc["spec"]["routes"].as_sequence().unwrap();
                assert!(!routes.is_empty());
                for route in routes {
                    assert!(
                        !route["middlewares"].as_sequence().unwrap().is_empty(),
                        "every IngressRoute route goes through the scopegate Middleware"
                    );
                }
            }
            // Its fields: `cert_manager_renews_the_client_certificate_and_ca_that_scopegate_reads`.
            "Certificate" => assert_eq!(api_version, "cert-manager.io/v1"),
            other => panic!("{other} ({api_version}) is not checked here; add a check for it"),
        }
    }
    assert!(!middlewares.is_empty(), "traefik.yaml has no Middleware");

    // The Ingress goes through the Middleware, named the way Traefik's Ingress provider wants.
    let ingress = docs.iter().find(|d| s(d, "kind") == "Ingress").unwrap();
    let used =
        ingress["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"]
            .as_str()
            .unwrap();
    assert!(
        middlewares.iter().any(|m| m == used),
        "{used} not in {middlewares:?}"
    );
}

#[test]
fn ingress_nginx_asks_scopegate_and_copies_its_headers() {
    let docs = documents(&repo().join("deploy/kubernetes/ingress-nginx.yaml"));
    let auth_port = forward_auth_port(&docs);
    let ingress = docs.iter().find(|d| s(d, "kind") == "Ingress").unwrap();
    assert_eq!(s(ingress, "apiVersion"), "networking.k8s.io/v1");
    let annotations = &ingress["metadata"]["annotations"];
    let get = |key: &str| {
        annotations[format!("nginx.ingress.kubernetes.io/{key}").as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} annotation"))
    };
    assert_eq!(
        get("auth-url"),
        format!("http://scopegate-auth.scopegate.svc.cluster.local:{auth_port}/")
    );
    assert_eq!(get("auth-response-headers"), RESPONSE_HEADERS.join(","));
    // With a method, ingress-nginx sets X-Original-URI itself instead of passing the client's.
    assert_eq!(get("auth-method"), "GET");
}

/// A document with the ConfigMap's `forward_auth.convention` line (and its comment) left out:
/// the one line that must differ, since each manifest pins the ingress it is for.
fn without_convention(mut doc: Value) -> Value {
    if let Some(data) = doc.get_mut("data").and_then(|d| d.as_mapping_mut()) {
        for (_, text) in data.iter_mut() {
            if let Some(t) = text.as_str() {
                let kept: Vec<&str> = t
                    .lines()
                    .filter(|l| {
                        let l = l.trim_start();
                        !l.starts_with("convention:")
                            && !l.starts_with("# The one ingress that asks")
                            && !l.starts_with("# client's and is refused")
                            && !l.starts_with("# `auth-method`); any other")
                    })
                    .collect();
                *text = Value::String(kept.join("\n"));
            }
        }
    }
    doc
}

#[test]
fn the_forward_auth_gateway_is_the_same_in_both_ingress_manifests() {
    let shared = |file: &str| -> Vec<Value> {
        documents(&repo().join("deploy/kubernetes").join(file))
            .into_iter()
            .filter(|d| s(d, "kind") == "Namespace" || namespace(d) == "scopegate")
            .map(without_convention)
            .collect()
    };
    let nginx = shared("ingress-nginx.yaml");
    assert!(
        nginx.iter().any(|d| s(d, "kind") == "Deployment"),
        "{nginx:?}"
    );
    assert_eq!(
        nginx,
        shared("traefik.yaml"),
        "applying both files must not fight over the scopegate-auth objects: keep them identical"
    );
}

#[test]
fn pods_are_hardened_and_probe_the_admin_port() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let image_cmd = format!(
        "CMD [{}]",
        SERVE
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        dockerfile.contains(&image_cmd),
        "deploy/Dockerfile: {image_cmd}"
    );
    assert!(dockerfile.contains("ENTRYPOINT [\"/scopegate\"]"));
    let image_user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();

    let mut scopegates = 0;
    for file in manifests() {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("PRIVATE KEY"),
            "{}: a private key",
            file.display()
        );
        let docs = documents(&file);
        assert!(
            docs.iter().all(|d| s(d, "kind") != "Secret"),
            "{}: Secrets are created with kubectl, never committed",
            file.display()
        );
        for deployment in docs.iter().filter(|d| s(d, "kind") == "Deployment") {
            let at = format!("{}: deployment/{}", file.display(), name(deployment));
            let pod = &deployment["spec"]["template"]["spec"];
            let security = &pod["securityContext"];
            assert_eq!(security["runAsNonRoot"], Value::Bool(true), "{at}");
            assert!(security["runAsUser"].as_u64().unwrap() > 0, "{at}");
            assert_eq!(
                s(&security["seccompProfile"], "type"),
                "RuntimeDefault",
                "{at}"
            );
            for container in pod["containers"].as_sequence().unwrap() {
                let at = format!("{at}: container {}", s(container, "name"));
                let security = &container["securityContext"];
                assert_eq!(
                    security["allowPrivilegeEscalation"],
                    Value::Bool(false),
                    "{at}"
                );
                assert_eq!(
                    security["readOnlyRootFilesystem"],
                    Value::Bool(true),
                    "{at}"
                );
                assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"], "{at}");
                assert_eq!(
                    s(&security["seccompProfile"], "type"),
                    "RuntimeDefault",
                    "{at}"
                );
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            !container["resources"][bound][resource].is_null(),
                            "{at}: resources.{bound}.{resource}"
                        );
                    }
                }
                if strings(&container["args"]).first() == Some(&"serve") {
                    scopegates += 1;
                    assert_eq!(strings(&container["args"]), SERVE, "{at}");
                    let uid = security["runAsUser"]
                        .as_u64()
                        .or(pod["securityContext"]["runAsUser"].as_u64());
                    assert_eq!(uid, Some(image_user), "{at}: the image's user");
                    let config = server_config(&docs, pod);
                    let admin_port = port_of(&config["listen"]["admin"]);
                    assert_eq!(container_port(container, "admin"), admin_port, "{at}");
                    for (probe, path) in
                        [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
                    {
                        let get = &container[probe]["httpGet"];
                        assert_eq!(s(get, "path"), path, "{at}: {probe}");
                        assert_eq!(s(get, "port"), "admin", "{at}: {probe}");
                    }
                }
            }
        }
    }
    assert_eq!(
        scopegates, 4,
        "sidecar, ingress-nginx, traefik and private-ca each run scopegate"
    );
}

#[test]
fn cert_manager_renews_the_client_certificate_and_ca_that_scopegate_reads() {
    let docs = documents(&repo().join("deploy/kubernetes/private-ca.yaml"));
    let certificate = docs.iter().find(|d| s(d, "kind") == "Certificate").unwrap();
    let spec = &certificate["spec"];
    assert!(strings(&spec["usages"]).contains(&"client auth"));
    assert_eq!(s(&spec["privateKey"], "rotationPolicy"), "Always");
    assert_eq!(s(&spec["issuerRef"], "group"), "cert-manager.io");
    assert!(!spec["issuerRef"]["name"].is_null() && !spec["secretName"].is_null());
    let deployment = docs.iter().find(|d| s(d, "kind") == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let mounted = cert_manager_items(&docs, pod);
    let config = server_config(&docs, pod);
    let tls = [
        &config["upstreams"]["orders-api"]["tls"],
        &config["issuers"]["keycloak"]["tls"],
    ];
    let mut files = 0;
    for tls in tls {
        for key in ["ca_file", "client_cert", "client_key"] {
            let Some(file) = tls[key].as_str() else {
                continue;
            };
            let path = file.strip_prefix("/etc/scopegate/").unwrap();
            assert!(mounted.contains_key(path), "{file} is not cert-manager's");
            files += 1;
        }
    }
    assert_eq!(
        files, 4,
        "the upstream's CA and client pair, and the IdP's CA"
    );
}

#[test]
fn envoy_ext_authz_asks_scopegate_fails_closed_and_forwards_the_minted_token() {
    let (config, names, filters) = envoy_filters("ext_authz.yaml");
    let ext_authz = names
        .iter()
        .position(|n| n == "envoy.filters.http.ext_authz")
        .unwrap();
    let authz = &filters[ext_authz]["typed_config"];
    let http = &authz["http_service"];
    assert_eq!(s(http, "path_prefix"), "/envoy");
    assert_eq!(
        s(&http["server_uri"], "uri"),
        "http://scopegate-auth.scopegate.svc.cluster.local:8081"
    );
    // The cluster the check goes to is scopegate's auth port.
    scopegate_auth_cluster(&config, s(&http["server_uri"], "cluster"));

    // What the check request carries, and what comes back into the request upstream.
    let request = patterns(&authz["allowed_headers"]);
    for header in ["authorization", "x-organization"] {
        assert!(
            matches(&request, header),
            "allowed_headers lacks {header}: {request:?}"
        );
    }
    let upstream = patterns(&http["authorization_response"]["allowed_upstream_headers"]);
    for header in RESPONSE_HEADERS {
        assert!(
            matches(&upstream, &header.to_ascii_lowercase()),
            "allowed_upstream_headers lacks {header}: {upstream:?}"
        );
    }

    // The client's own X-Scopegate-* headers are dropped before ext_authz runs.
    let strip = names
        .iter()
        .position(|n| n == "envoy.filters.http.header_mutation")
        .unwrap();
    assert!(strip < ext_authz);
    let removed: Vec<&str> = filters[strip]["typed_config"]["mutations"]["request_mutations"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| s(m, "remove"))
        .collect();
    for header in &RESPONSE_HEADERS[1..] {
        assert!(
            removed.contains(&header.to_ascii_lowercase().as_str()),
            "{removed:?}"
        );
    }
}

#[test]
fn envoy_ext_authz_over_grpc_asks_scopegates_check_service_over_h2c_and_fails_closed() {
    let (config, names, filters) = envoy_filters("ext_authz_grpc.yaml");
    let ext_authz = names
        .iter()
        .position(|n| n == "envoy.filters.http.ext_authz")
        .unwrap();
    let authz = &filters[ext_authz]["typed_config"];
    assert!(authz["http_service"].is_null(), "one transport: gRPC");
    let grpc = &authz["grpc_service"];
    assert!(grpc["timeout"].as_str().is_some());
    let cluster = scopegate_auth_cluster(&config, s(&grpc["envoy_grpc"], "cluster_name"));
    // gRPC needs HTTP/2; scopegate's auth listener speaks it without TLS (h2c).
    let options = &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        s(options, "@type"),
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    );
    assert!(options["explicit_http_config"]["http2_protocol_options"].is_mapping());
    let request = patterns(&authz["allowed_headers"]);
    for header in ["authorization", "x-organization"] {
        assert!(matches(&request, header), "allowed_headers lacks {header}");
    }
}

/// An Envoy config of deploy/envoy: the whole file, its HTTP filters' names and the filters.
/// Every one has a fail-closed v3 ext_authz filter and ends with the router.
fn envoy_filters(file: &str) -> (Value, Vec<String>, Vec<Value>) {
    let config: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/envoy").join(file)).unwrap(),
    )
    .unwrap();
    let manager = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
    assert_eq!(
        s(manager, "name"),
        "envoy.filters.network.http_connection_manager"
    );
    let filters = manager["typed_config"]["http_filters"]
        .as_sequence()
        .unwrap()
        .clone();
    let names: Vec<String> = filters.iter().map(|f| s(f, "name").to_string()).collect();
    assert_eq!(
        names.last().map(String::as_str),
        Some("envoy.filters.http.router"),
        "{file}: {names:?}"
    );
    let authz = &filters
        .iter()
        .find(|f| s(f, "name") == "envoy.filters.http.ext_authz")
        .unwrap_or_else(|| panic!("{file}: no ext_authz filter in {names:?}"))["typed_config"];
    assert_eq!(
        s(authz, "@type"),
        "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
    );
    assert_eq!(s(authz, "transport_api_version"), "V3");
    assert_eq!(
        authz["failure_mode_allow"],
        Value::Bool(false),
        "{file}: fail closed"
    );
    (config, names, filters)
}

/// The cluster `name` of an Envoy config, checked to be scopegate's auth Service and port.
fn scopegate_auth_cluster<'a>(config: &'a Value, name: &str) -> &'a Value {
    let cluster = config["static_resources"]["clusters"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| s(c, "name") == name)
        .unwrap_or_else(|| panic!("no cluster {name}"));
    let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        ["socket_address"];
    assert_eq!(
        s(address, "address"),
        "scopegate-auth.scopegate.svc.cluster.local"
    );
    assert_eq!(address["port_value"].as_u64(), Some(8081));
    cluster
}

#[test]
fn every_configmap_passes_scopegate_check_as_mounted() {
    let mut checked = 0;
    for file in manifests() {
        let docs = documents(&file);
        for deployment in docs.iter().filter(|d| s(d, "kind") == "Deployment") {
            let pod = &deployment["spec"]["template"]["spec"];
            for container in pod["containers"].as_sequence().unwrap() {
                if strings(&container["args"]).first() != Some(&"serve") {
                    continue;
                }
                let at = format!("{}: deployment/{}", file.display(), name(deployment));
                let tag = file.file_stem().unwrap().to_str().unwrap();
                check_as_mounted(&at, tag, &docs, pod, container);
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked, 4,
        "sidecar, ingress-nginx, traefik and private-ca each carry a configuration"
    );
}

/// Lays the container's volume out in a temporary folder exactly as the kubelet would (the
/// ConfigMap's items at their paths, a fresh key from `keygen` where the Secret's items go),
/// points the server file at that folder instead of the mount path, and runs `scopegate check`.
fn check_as_mounted(at: &str, tag: &str, docs: &[Value], pod: &Value, container: &Value) {
    let config_path = SERVE[2];
    let (mount, files) = mounted_files(docs, pod, container, config_path);
    let dir = tempdir(&format!("{tag}-{}", s(container, "name")));
    let server = files
        .get(config_path.strip_prefix(&format!("{mount}/")).unwrap())
        .unwrap_or_else(|| panic!("{at}: nothing mounted at {config_path}"))
        .clone()
        .unwrap_or_else(|| panic!("{at}: {config_path} comes from a Secret"));
    let parsed: Value = serde_yaml::from_str(&server).unwrap();
    let cert_manager = cert_manager_items(docs, pod);

    for (path, text) in &files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        match text {
            Some(text) => std::fs::write(&target, text).unwrap(),
            None if cert_manager.contains_key(path) => {
                std::fs::write(&target, &cert_manager[path]).unwrap();
            }
            None => {
                // A Secret item: it must be a signing key the server file names.
                let key = parsed["signing"]["keys"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|k| k["file"].as_str() == Some(&format!("{mount}/{path}")))
                    .unwrap_or_else(|| panic!("{at}: Secret item {path} is no signing key"));
                let stem = target.file_stem().unwrap().to_str().unwrap();
                assert_eq!(stem, s(key, "kid"), "{at}: name the key file <kid>.pem");
                let (ok, _, err) = scopegate(&[
                    "keygen",
                    "--alg",
                    key["alg"].as_str().unwrap_or("ES256"),
                    "--kid",
                    stem,
                    "--out",
                    target.parent().unwrap().to_str().unwrap(),
                ]);
                assert!(ok, "{at}: keygen: {err}");
            }
        }
    }
    // Every signing key file comes from the volume.
    for key in parsed["signing"]["keys"].as_sequence().unwrap() {
        let file = s(key, "file");
        let rel = file
            .strip_prefix(&format!("{mount}/"))
            .unwrap_or_else(|| panic!("{at}: key {file} is not under {mount}"));
        assert!(files.contains_key(rel), "{at}: nothing mounted at {file}");
    }

    let server = dir.join(config_path.strip_prefix(&format!("{mount}/")).unwrap());
    let text = std::fs::read_to_string(&server)
        .unwrap()
        .replace(&format!("{mount}/"), &format!("{}/", dir.display()));
    std::fs::write(&server, text).unwrap();
    let (ok, out, err) = scopegate(&["check", "--config", server.to_str().unwrap()]);
    assert!(ok, "{at}: scopegate check:\n{out}{err}");
    assert!(out.contains(": ok ("), "{at}: {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What cert-manager writes into the Secrets of the pod's projected volume that a `Certificate`
/// in `docs` names (`ca.crt`, `tls.crt`, `tls.key`), made here by rcgen, by path in the mount.
fn cert_manager_items(docs: &[Value], pod: &Value) -> BTreeMap<String, String> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let mut items = BTreeMap::new();
    let sources = pod["volumes"].as_sequence().unwrap().iter().flat_map(|v| {
        v["projected"]["sources"]
            .as_sequence()
            .cloned()
            .unwrap_or_default()
    });
    for secret in sources.filter(|s| !s["secret"].is_null()) {
        let secret = &secret["secret"];
        let Some(certificate) = docs
            .iter()
            .find(|d| s(d, "kind") == "Certificate" && d["spec"]["secretName"] == secret["name"])
        else {
            continue;
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let names = strings(&certificate["spec"]["dnsNames"]);
        let leaf =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
        for item in secret["items"].as_sequence().unwrap() {
            let text = match s(item, "key") {
                "ca.crt" => ca.pem(),
                "tls.crt" => leaf.pem(),
                "tls.key" => key.serialize_pem(),
                other => panic!("a cert-manager Secret has no item {other}"),
            };
            items.insert(s(item, "path").to_string(), text);
        }
    }
    items
}

/// The files the volume mounted over `config_path` shows, by path inside the mount: the text of
/// ConfigMap items, `None` for Secret items. Returns the mount path too.
fn mounted_files(
    docs: &[Value],
    pod: &Value,
    container: &Value,
    config_path: &str,
) -> (String, BTreeMap<String, Option<String>>) {
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| config_path.starts_with(&format!("{}/", s(m, "mountPath"))))
        .unwrap_or_else(|| panic!("no volume mounted over {config_path}"));
    assert!(
        mount["subPath"].is_null(),
        "subPath volumes are never updated in place"
    );
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let mut files = BTreeMap::new();
    for source in volume["projected"]["sources"].as_sequence().unwrap() {
        let (from, secret) = if source["configMap"].is_null() {
            (&source["secret"], true)
        } else {
            (&source["configMap"], false)
        };
        let map = (!secret).then(|| {
            docs.iter()
                .find(|d| s(d, "kind") == "ConfigMap" && name(d) == s(from, "name"))
                .unwrap_or_else(|| panic!("no ConfigMap {}", s(from, "name")))
        });
        for item in from["items"].as_sequence().unwrap() {
            let text = map.map(|m| {
                m["data"][s(item, "key")]
                    .as_str()
                    .unwrap_or_else(|| panic!("ConfigMap {} has no {}", name(m), s(item, "key")))
                    .to_string()
            });
            files.insert(s(item, "path").to_string(), text);
        }
    }
    (s(mount, "mountPath").to_string(), files)
}

/// The server file a scopegate pod runs with, parsed.
fn server_config(docs: &[Value], pod: &Value) -> Value {
    let container = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| strings(&c["args"]).first() == Some(&"serve"))
        .unwrap();
    let (mount, files) = mounted_files(docs, pod, container, SERVE[2]);
    let text = files[SERVE[2].strip_prefix(&format!("{mount}/")).unwrap()]
        .as_deref()
        .unwrap();
    serde_yaml::from_str(text).unwrap()
}

/// The port of the forward-auth Service in a manifest, checked against the `auth` listener and
/// the container port it targets.
fn forward_auth_port(docs: &[Value]) -> u64 {
    let deployment = docs
        .iter()
        .find(|d| s(d, "kind") == "Deployment" && name(d) == "scopegate-auth")
        .unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let listen = port_of(&server_config(docs, pod)["listen"]["auth"]);
    assert_eq!(container_port(&pod["containers"][0], "auth"), listen);
    let service = docs
        .iter()
        .find(|d| s(d, "kind") == "Service" && name(d) == "scopegate-auth")
        .unwrap();
    assert_eq!(namespace(service), "scopegate");
    let port = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| s(p, "name") == "auth")
        .unwrap();
    assert_eq!(s(port, "targetPort"), "auth");
    assert_eq!(port["port"].as_u64(), Some(listen));
    listen
}

fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| s(p, "name") == name)
        .unwrap_or_else(|| panic!("no container port {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// The port of a listen address like `"0.0.0.0:8081"`.
fn port_of(address: &Value) -> u64 {
    address
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap()
}

/// Envoy `ListStringMatcher` patterns as (kind, value): `("exact", "authorization")`.
fn patterns(list: &Value) -> Vec<(String, String)> {
    list["patterns"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|p| p.as_mapping().unwrap().iter())
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn matches(patterns: &[(String, String)], header: &str) -> bool {
    patterns.iter().any(|(kind, value)| match kind.as_str() {
        "exact" => value == header,
        "prefix" => header.starts_with(value.as_str()),
        _ => false,
    })
}

/// `deploy/kubernetes/*.yaml`, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap()).collect();
    for expected in [
        "ingress-nginx.yaml",
        "private-ca.yaml",
        "sidecar.yaml",
        "traefik.yaml",
    ] {
        assert!(names.iter().any(|n| *n == expected), "{expected} missing");
    }
    files
}

fn all_documents() -> Vec<Value> {
    manifests().iter().flat_map(|f| documents(f)).collect()
}

/// The non-empty documents of a multi-document YAML file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// A string field, or "" when it is missing.
fn s<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    s(&doc["metadata"], "name")
}

fn namespace(doc: &Value) -> &str {
    s(&doc["metadata"], "namespace")
}

fn strings(list: &Value) -> Vec<&str> {
    list.as_sequence()
        .map(|l| l.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "scopegate-test-deploy-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
