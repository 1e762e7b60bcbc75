//! `cargo xtask deploy-check`: checks the deployment files in `dev-env/` without a Docker
//! engine or a Kubernetes cluster: every YAML file parses, the keys each tool requires are
//! there, references (networks, secrets, volumes, ConfigMaps) resolve, probes hit
//! `/health/*`, and every variable set for the gateway is one the daemon reads.

use crate::util::{root, step};
use anyhow::{Context, Result, bail};
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Runs every check; fails with the list of problems.
pub fn main() -> Result<()> {
    step("checking deployment files (dev-env/docker, compose, swarm, k8s)");
    let dev = root().join("dev-env");
    let known = known_variables()?;
    let mut problems = Vec::new();
    dockerfile(&dev.join("docker").join("Dockerfile"), &mut problems)?;
    compose(&dev.join("compose"), &known, &mut problems)?;
    swarm(
        &dev.join("swarm").join("exesdb-gater-stack.yaml"),
        &known,
        &mut problems,
    )?;
    k8s(&dev.join("k8s"), &known, &mut problems)?;
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("  {p}");
        }
        bail!("{} problem(s) in the deployment files", problems.len());
    }
    println!("deployment files: ok");
    Ok(())
}

/// Variables the daemon reads: string literals naming variables in its config and in
/// gater-gossip's, so a typo in a deployment file is caught.
fn known_variables() -> Result<BTreeSet<String>> {
    let mut vars = BTreeSet::new();
    for f in [
        "crates/exesdb-gater/src/config.rs",
        "crates/gater-gossip/src/config.rs",
    ] {
        let text = std::fs::read_to_string(root().join(f)).with_context(|| f.to_owned())?;
        for piece in text.split('"').skip(1).step_by(2) {
            if (piece.starts_with("EX_ESDB_")
                || piece.starts_with("RELEASE_COOKIE")
                || piece == "LOG_LEVEL"
                || piece == "ERL_EPMD_PORT")
                && piece
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                vars.insert(piece.to_owned());
            }
        }
    }
    if !vars.contains("EX_ESDB_GATER_LISTEN") || !vars.contains("EX_ESDB_COOKIE") {
        bail!("could not read the daemon's variable names");
    }
    Ok(vars)
}

fn load(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = serde_yaml::Value::deserialize(doc)
            .with_context(|| format!("{}: not valid YAML", path.display()))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

use serde::Deserialize as _;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn list_or_keys(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s
            .iter()
            .filter_map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .or_else(|| x.get("source").and_then(Value::as_str).map(str::to_owned))
            })
            .collect(),
        Value::Mapping(_) => keys(v).into_iter().collect(),
        _ => Vec::new(),
    }
}

fn env_names(v: &Value) -> Vec<String> {
    match v {
        Value::Mapping(_) => keys(v).into_iter().collect(),
        Value::Sequence(s) => s
            .iter()
            .filter_map(|x| {
                x.as_str()
                    .map(|e| e.split('=').next().unwrap_or(e).to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn check_env(who: &str, names: &[String], known: &BTreeSet<String>, problems: &mut Vec<String>) {
    for n in names {
        if (n.starts_with("EX_ESDB_GATER") || n.starts_with("EX_ESDB_COOKIE")) && !known.contains(n)
        {
            problems.push(format!("{who}: the daemon does not read {n}"));
        }
    }
}

fn dockerfile(path: &Path, problems: &mut Vec<String>) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = lines
        .iter()
        .filter(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .collect();
    let who = "Dockerfile";
    if froms.len() < 2 {
        problems.push(format!("{who}: not multi-stage (one FROM)"));
    }
    if let Some(last) = froms.last() {
        if last.contains("rust:") {
            problems.push(format!("{who}: the runtime stage is the Rust build image"));
        }
    }
    for needle in [
        "COPY --from=",
        "-p exesdb-gater",
        "ENTRYPOINT",
        "USER ",
        "EXPOSE 4000",
        "HEALTHCHECK",
    ] {
        if !lines.iter().any(|l| l.contains(needle)) {
            problems.push(format!("{who}: no `{needle}`"));
        }
    }
    if lines
        .iter()
        .any(|l| l.starts_with("USER root") || l.starts_with("USER 0"))
    {
        problems.push(format!("{who}: runs as root"));
    }
    Ok(())
}

fn compose(dir: &Path, known: &BTreeSet<String>, problems: &mut Vec<String>) -> Result<()> {
    // Merge the files as `docker compose -f a -f b ...` would, by top-level section.
    let files = [
        "gater-network.yaml",
        "ex-esdb.yaml",
        "gater.yaml",
        "gater-override.yaml",
    ];
    let mut services = serde_yaml::Mapping::new();
    let (mut networks, mut volumes, mut secrets) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for f in files {
        let path = dir.join(f);
        let docs = load(&path)?;
        let Some(doc) = docs.first() else {
            problems.push(format!("compose/{f}: empty"));
            continue;
        };
        for k in keys(doc) {
            if ![
                "services", "networks", "volumes", "secrets", "configs", "name",
            ]
            .contains(&k.as_str())
                && !k.starts_with("x-")
            {
                problems.push(format!("compose/{f}: unknown top-level key `{k}`"));
            }
        }
        networks.extend(keys(&doc["networks"]));
        volumes.extend(keys(&doc["volumes"]));
        for (name, s) in doc["secrets"].as_mapping().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default().to_owned();
            if let Some(file) = s.get("file").and_then(Value::as_str) {
                if !dir.join(file).is_file() {
                    problems.push(format!("compose/{f}: secret {name}: no file {file}"));
                }
            }
            secrets.insert(name);
        }
        if let Some(m) = doc["services"].as_mapping() {
            for (k, v) in m {
                let entry = services
                    .entry(k.clone())
                    .or_insert_with(|| Value::Mapping(Default::default()));
                if let (Some(dst), Some(src)) = (entry.as_mapping_mut(), v.as_mapping()) {
                    for (sk, sv) in src {
                        match (dst.get_mut(sk), sv) {
                            (Some(Value::Mapping(d)), Value::Mapping(s)) => d.extend(s.clone()),
                            _ => {
                                dst.insert(sk.clone(), sv.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    let service_names: BTreeSet<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    if !service_names.contains("exesdb-gater") {
        problems.push("compose: no exesdb-gater service".into());
    }
    for (name, s) in &services {
        let name = name.as_str().unwrap_or_default();
        let who = format!("compose service {name}");
        if s.get("image").is_none() && s.get("build").is_none() {
            problems.push(format!("{who}: neither image nor build"));
        }
        for n in list_or_keys(&s["networks"]) {
            if !networks.contains(&n) {
                problems.push(format!("{who}: network {n} is not defined"));
            }
        }
        for n in list_or_keys(&s["secrets"]) {
            if !secrets.contains(&n) {
                problems.push(format!("{who}: secret {n} is not defined"));
            }
        }
        for v in s["volumes"].as_sequence().into_iter().flatten() {
            if let Some(src) = v.as_str().and_then(|v| v.split(':').next()) {
                if !src.starts_with('.') && !src.starts_with('/') && !volumes.contains(src) {
                    problems.push(format!("{who}: volume {src} is not defined"));
                }
            }
        }
        for d in list_or_keys(&s["depends_on"]) {
            if !service_names.contains(&d) {
                problems.push(format!("{who}: depends on unknown service {d}"));
            }
        }
        check_env(&who, &env_names(&s["environment"]), known, problems);
    }
    if let Some(g) = services.get("exesdb-gater") {
        let env = env_names(&g["environment"]);
        for required in [
            "EX_ESDB_GATER_LISTEN",
            "EX_ESDB_COOKIE_FILE",
            "EX_ESDB_GATER_AUTH_SECRET_FILE",
        ] {
            if !env.iter().any(|e| e == required) {
                problems.push(format!(
                    "compose service exesdb-gater: {required} is not set"
                ));
            }
        }
        if g.get("healthcheck").is_none() {
            problems.push("compose service exesdb-gater: no healthcheck".into());
        }
    }
    Ok(())
}

fn swarm(path: &Path, known: &BTreeSet<String>, problems: &mut Vec<String>) -> Result<()> {
    let docs = load(path)?;
    let Some(doc) = docs.first() else {
        problems.push("swarm stack: empty".into());
        return Ok(());
    };
    let who = "swarm stack";
    let s = &doc["services"]["exesdb-gater"];
    if s.is_null() {
        problems.push(format!("{who}: no exesdb-gater service"));
        return Ok(());
    }
    if s.get("build").is_some() {
        problems.push(format!("{who}: `build` is ignored by docker stack deploy"));
    }
    if s["image"].as_str().is_none() {
        problems.push(format!("{who}: no image"));
    }
    if s["deploy"]["replicas"].as_u64().unwrap_or(0) < 2 {
        problems.push(format!("{who}: deploy.replicas below 2"));
    }
    for n in list_or_keys(&s["networks"]) {
        if doc["networks"][n.as_str()].is_null() {
            problems.push(format!("{who}: network {n} is not defined"));
        }
    }
    for n in list_or_keys(&s["secrets"]) {
        if doc["secrets"][n.as_str()].is_null() {
            problems.push(format!("{who}: secret {n} is not defined"));
        }
    }
    check_env(who, &env_names(&s["environment"]), known, problems);
    Ok(())
}

fn k8s(dir: &Path, known: &BTreeSet<String>, problems: &mut Vec<String>) -> Result<()> {
    let mut objects = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
    {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        for doc in load(p)? {
            for key in ["apiVersion", "kind"] {
                if doc[key].as_str().is_none() {
                    problems.push(format!("k8s/{name}: no {key}"));
                }
            }
            if doc["kind"].as_str() != Some("Kustomization")
                && doc["metadata"]["name"].as_str().is_none()
            {
                problems.push(format!("k8s/{name}: no metadata.name"));
            }
            objects.push((name.clone(), doc));
        }
    }
    let find = |kind: &str, n: &str| {
        objects.iter().any(|(_, o)| {
            o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(n)
        })
    };
    // Kustomization lists files that exist.
    for (_, o) in objects
        .iter()
        .filter(|(_, o)| o["kind"].as_str() == Some("Kustomization"))
    {
        for r in o["resources"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !dir.join(r).is_file() {
                problems.push(format!("k8s kustomization: resource {r} does not exist"));
            }
        }
    }
    let deployments: Vec<&Value> = objects
        .iter()
        .filter(|(_, o)| o["kind"].as_str() == Some("Deployment"))
        .map(|(_, o)| o)
        .collect();
    if deployments.is_empty() {
        problems.push("k8s: no Deployment".into());
    }
    for d in deployments {
        let who = format!(
            "k8s Deployment {}",
            d["metadata"]["name"].as_str().unwrap_or("?")
        );
        if d["spec"]["replicas"].as_u64() != Some(3) {
            problems.push(format!("{who}: replicas is not 3"));
        }
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        for (k, v) in d["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .into_iter()
            .flatten()
        {
            if labels.get(k) != Some(v) {
                problems.push(format!(
                    "{who}: selector label {k:?} not on the pod template"
                ));
            }
        }
        let pod = &d["spec"]["template"]["spec"];
        for v in pod["volumes"].as_sequence().into_iter().flatten() {
            if let Some(s) = v["secret"]["secretName"].as_str() {
                if !find("Secret", s) {
                    problems.push(format!(
                        "{who}: Secret {s} is not among the manifests (secret.example.yaml)"
                    ));
                }
            }
        }
        for c in pod["containers"].as_sequence().into_iter().flatten() {
            let port_names: BTreeSet<String> = c["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            for (probe, path) in [
                ("livenessProbe", "/health/live"),
                ("readinessProbe", "/health/ready"),
            ] {
                let g = &c[probe]["httpGet"];
                if g["path"].as_str() != Some(path) {
                    problems.push(format!("{who}: {probe} is not an httpGet on {path}"));
                }
                if let Some(p) = g["port"].as_str() {
                    if !port_names.contains(p) {
                        problems.push(format!(
                            "{who}: {probe} port {p} is not a container port name"
                        ));
                    }
                }
            }
            for e in c["envFrom"].as_sequence().into_iter().flatten() {
                if let Some(cm) = e["configMapRef"]["name"].as_str() {
                    if !find("ConfigMap", cm) {
                        problems.push(format!("{who}: ConfigMap {cm} is not among the manifests"));
                    }
                }
            }
            let names: Vec<String> = c["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect();
            check_env(&who, &names, known, problems);
            if !names.iter().any(|n| n.ends_with("_FILE")) {
                problems.push(format!("{who}: secrets not passed as *_FILE references"));
            }
        }
    }
    for (f, o) in objects
        .iter()
        .filter(|(_, o)| o["kind"].as_str() == Some("ConfigMap"))
    {
        check_env(
            &format!("k8s/{f}"),
            &keys(&o["data"]).into_iter().collect::<Vec<_>>(),
            known,
            problems,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of dev-env/k8s with one file changed, checked.
    fn k8s_problems(file: &str, from: &str, to: &str) -> Result<Vec<String>> {
        let src = root().join("dev-env").join("k8s");
        let dir = std::env::temp_dir().join(format!("deploy-check-{}-{file}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        for e in std::fs::read_dir(&src).expect("k8s dir").flatten() {
            let text = std::fs::read_to_string(e.path()).expect("read");
            let text = if e.file_name() == file {
                text.replace(from, to)
            } else {
                text
            };
            std::fs::write(dir.join(e.file_name()), text).expect("write");
        }
        let known = known_variables().expect("variables");
        let mut problems = Vec::new();
        let r = k8s(&dir, &known, &mut problems);
        let _ = std::fs::remove_dir_all(&dir);
        r.map(|_| problems)
    }

    #[test]
    fn shipped_files_pass_and_broken_ones_are_caught() {
        let p = k8s_problems("deployment.yaml", "", "").expect("runs");
        assert!(p.is_empty(), "{p:?}");
        let p = k8s_problems("deployment.yaml", "replicas: 3", "replicas: 1").expect("runs");
        assert!(p.iter().any(|p| p.contains("replicas")), "{p:?}");
        let p =
            k8s_problems("deployment.yaml", "path: /health/ready", "path: /ready").expect("runs");
        assert!(p.iter().any(|p| p.contains("readinessProbe")), "{p:?}");
        let p = k8s_problems(
            "configmap.yaml",
            "EX_ESDB_GATER_LISTEN",
            "EX_ESDB_GATER_LISTN",
        )
        .expect("runs");
        assert!(p.iter().any(|p| p.contains("EX_ESDB_GATER_LISTN")), "{p:?}");
        let p = k8s_problems(
            "deployment.yaml",
            "secretName: exesdb-gater",
            "secretName: other",
        )
        .expect("runs");
        assert!(p.iter().any(|p| p.contains("Secret other")), "{p:?}");
        assert!(
            k8s_problems("service.yaml", "kind: Service", "kind: [").is_err(),
            "invalid YAML fails the check"
        );
    }
}
