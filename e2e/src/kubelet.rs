//! A stand-in for the parts of a cluster the API emulator does not run: the kubelet, and the
//! Deployment and Job controllers. For the Jobs and Deployments of one namespace it starts
//! their containers as local processes of the Aerugo binaries and writes back the status a
//! cluster would — so the data plane the operator declares for a `Registry` is the one the
//! test pushes to.
//!
//! A container runs as it would in a pod, translated to one machine: the image is the Aerugo
//! image (entrypoint `aerugo-dataplane`; `command: [aerugo-operator]` selects the operator),
//! `env`, `envFrom` and Secret or ConfigMap volumes are resolved from the emulator (volume files
//! go to a temporary directory and environment values under a mount path follow them), and
//! `AERUGO_LISTEN`/`AERUGO_ADMIN_LISTEN` move to free loopback ports. Each Deployment's pods are
//! replaced when its pod template changes. Everything it reads and writes goes past the API, so
//! the emulator's request record holds the operator's requests only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aerugo_kube_emulator::Emulator;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::{dataplane_bin, free_port, http_status, operator_bin};

/// One running container.
pub struct Pod {
    child: Child,
    /// `127.0.0.1:<port>` it serves clients on (`AERUGO_LISTEN`).
    pub host: String,
    /// `127.0.0.1:<port>` of its admin server.
    pub admin: String,
    /// Where its output goes.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Rollout {
    template: Value,
    pods: Vec<Pod>,
}

#[derive(Default)]
struct Nodes {
    deployments: BTreeMap<String, Rollout>,
    jobs: BTreeMap<String, bool>,
    errors: Vec<String>,
}

/// Runs the namespace's Jobs and Deployments until dropped.
pub struct Kubelet {
    nodes: Arc<Mutex<Nodes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    /// Starts watching `namespace` of `emulator` (polling every 100 ms).
    pub fn start(emulator: Emulator, namespace: &str) -> Kubelet {
        let nodes = Arc::new(Mutex::new(Nodes::default()));
        let task = {
            let (nodes, namespace) = (nodes.clone(), namespace.to_owned());
            tokio::spawn(async move {
                loop {
                    let (emulator, nodes, namespace) = (emulator.clone(), nodes.clone(), namespace.clone());
                    let step = tokio::task::spawn_blocking(move || sync(&emulator, &nodes, &namespace)).await;
                    if step.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        Kubelet { nodes, task }
    }

    /// The client addresses of the ready pods of Deployment `name`.
    pub fn pods(&self, name: &str) -> Vec<String> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.deployments.get(name).map(|r| r.pods.iter().map(|p| p.host.clone()).collect()).unwrap_or_default()
    }

    /// What went wrong starting containers (a missing Secret, a failed Job), for assertions.
    pub fn errors(&self) -> Vec<String> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner).errors.clone()
    }

    /// The log files of Deployment `name`'s pods.
    pub fn logs(&self, name: &str) -> Vec<PathBuf> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.deployments.get(name).map(|r| r.pods.iter().map(|p| p.log.clone()).collect()).unwrap_or_default()
    }
}

fn sync(emulator: &Emulator, nodes: &Mutex<Nodes>, namespace: &str) {
    for job in emulator.list_raw("batch/v1", "jobs", Some(namespace)) {
        let name = job["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        if nodes.lock().unwrap_or_else(PoisonError::into_inner).jobs.contains_key(&name) {
            continue;
        }
        let succeeded = run_job(emulator, namespace, &job);
        let status = match &succeeded {
            Ok(()) => json!({ "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] }),
            Err(_) => json!({ "failed": 7, "conditions": [{ "type": "Failed", "status": "True" }] }),
        };
        let _ = emulator.merge_status("batch/v1", "jobs", Some(namespace), &name, status);
        let mut nodes = nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = succeeded {
            nodes.errors.push(format!("job {name}: {e}"));
        }
        nodes.jobs.insert(name, true);
    }
    for deployment in emulator.list_raw("apps/v1", "deployments", Some(namespace)) {
        let name = deployment["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let template = deployment["spec"]["template"].clone();
        let hpa = emulator.get_raw("autoscaling/v2", "horizontalpodautoscalers", Some(namespace), &name);
        let replicas = deployment["spec"]["replicas"]
            .as_u64()
            .or_else(|| hpa.and_then(|h| h["spec"]["minReplicas"].as_u64()))
            .unwrap_or(1) as usize;
        let current = {
            let nodes = nodes.lock().unwrap_or_else(PoisonError::into_inner);
            nodes.deployments.get(&name).map(|r| (r.template == template, r.pods.len()))
        };
        if current != Some((true, replicas)) {
            let started: Result<Vec<Pod>, String> =
                (0..replicas).map(|_| start_container(emulator, namespace, &template)).collect();
            let mut nodes = nodes.lock().unwrap_or_else(PoisonError::into_inner);
            match started {
                // The old pods stop as the Rollout holding them is replaced.
                Ok(pods) => {
                    nodes.deployments.insert(name.clone(), Rollout { template, pods });
                }
                Err(e) => {
                    nodes.errors.push(format!("deployment {name}: {e}"));
                    continue;
                }
            }
        }
        let ready = {
            let nodes = nodes.lock().unwrap_or_else(PoisonError::into_inner);
            let pods = nodes.deployments.get(&name).map(|r| r.pods.iter().map(|p| p.host.clone()).collect::<Vec<_>>());
            pods.unwrap_or_default().iter().filter(|host| http_status(host, "GET", "/readyz") == Some(200)).count()
        };
        let status = json!({
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        });
        if deployment["status"]["readyReplicas"] != status["readyReplicas"]
            || deployment["status"]["observedGeneration"] != status["observedGeneration"]
        {
            let _ = emulator.merge_status("apps/v1", "deployments", Some(namespace), &name, status);
        }
    }
}

fn run_job(emulator: &Emulator, namespace: &str, job: &Value) -> Result<(), String> {
    let mut pod = start_container(emulator, namespace, &job["spec"]["template"])?;
    let status = pod.child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exited with {status}: {}", std::fs::read_to_string(&pod.log).unwrap_or_default()))
    }
}

fn decode(value: &Value) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.as_str()?).ok()?;
    String::from_utf8(bytes).ok()
}

/// The `data` of a Secret (decoded) or a ConfigMap.
fn source_data(
    emulator: &Emulator,
    namespace: &str,
    secret: Option<&str>,
    configmap: Option<&str>,
) -> Result<BTreeMap<String, String>, String> {
    let (object, encoded) = match (secret, configmap) {
        (Some(name), _) => {
            (emulator.get_raw("v1", "secrets", Some(namespace), name).ok_or(format!("no Secret {name}"))?, true)
        }
        (None, Some(name)) => {
            (emulator.get_raw("v1", "configmaps", Some(namespace), name).ok_or(format!("no ConfigMap {name}"))?, false)
        }
        (None, None) => return Err("neither a Secret nor a ConfigMap".into()),
    };
    let data = object["data"].as_object().cloned().unwrap_or_default();
    Ok(data
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), if encoded { decode(v)? } else { v.as_str()?.to_owned() })))
        .collect())
}

/// Starts the first container of a pod template.
fn start_container(emulator: &Emulator, namespace: &str, template: &Value) -> Result<Pod, String> {
    let spec = &template["spec"];
    let container = &spec["containers"][0];
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // A pod's name: unique, as the name a ReplicaSet gives its pods is (`metadata.name`).
    let pod_name = format!(
        "pod-{}",
        dir.path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .trim_start_matches('.')
            .to_ascii_lowercase()
    );
    let empty = Vec::new();
    let list = |v: &Value| v.as_array().unwrap_or(&empty).clone();
    // Volumes: each mount becomes a directory of files.
    let mut mounts = Vec::new();
    for mount in list(&container["volumeMounts"]) {
        let volume = list(&spec["volumes"])
            .into_iter()
            .find(|v| v["name"] == mount["name"])
            .ok_or(format!("no volume {}", mount["name"]))?;
        let data = source_data(
            emulator,
            namespace,
            volume["secret"]["secretName"].as_str(),
            volume["configMap"]["name"].as_str(),
        )?;
        let local = dir.path().join(mount["name"].as_str().unwrap_or("volume"));
        std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
        let source = if volume["secret"].is_object() { &volume["secret"] } else { &volume["configMap"] };
        let items: Vec<(String, String)> = match source["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap_or_default().to_owned(),
                        i["path"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in items {
            let value = data.get(&key).ok_or(format!("volume {}: no key {key}", mount["name"]))?;
            std::fs::write(local.join(path), value).map_err(|e| e.to_string())?;
        }
        mounts.push((mount["mountPath"].as_str().unwrap_or_default().to_owned(), local));
    }
    // Environment, in Kubernetes order: envFrom, then env.
    let mut env = BTreeMap::new();
    for from in list(&container["envFrom"]) {
        env.extend(source_data(
            emulator,
            namespace,
            from["secretRef"]["name"].as_str(),
            from["configMapRef"]["name"].as_str(),
        )?);
    }
    for var in list(&container["env"]) {
        let name = var["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else if let Some(from) = var["valueFrom"]["secretKeyRef"].as_object() {
            let data = source_data(emulator, namespace, from["name"].as_str(), None)?;
            data.get(from["key"].as_str().unwrap_or_default()).cloned().ok_or(format!("env {name}: no such key"))?
        } else if let Some(from) = var["valueFrom"]["configMapKeyRef"].as_object() {
            let data = source_data(emulator, namespace, None, from["name"].as_str())?;
            data.get(from["key"].as_str().unwrap_or_default()).cloned().ok_or(format!("env {name}: no such key"))?
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace" {
            namespace.to_owned()
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            pod_name.clone()
        } else {
            return Err(format!("env {name}: unsupported source {}", var["valueFrom"]));
        };
        env.insert(name, value);
    }
    for value in env.values_mut() {
        for (path, local) in &mounts {
            if let Some(rest) = value.strip_prefix(&format!("{path}/")) {
                *value = local.join(rest).display().to_string();
            }
        }
    }
    let host = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    env.insert("AERUGO_LISTEN".into(), host.clone());
    env.insert("AERUGO_ADMIN_LISTEN".into(), admin.clone());
    env.insert("AERUGO_WORKERS".into(), "2".into());
    let program = match container["command"][0].as_str() {
        Some("aerugo-operator") => operator_bin(),
        Some("aerugo-dataplane") | None => dataplane_bin(),
        Some(other) => return Err(format!("unknown command {other}")),
    };
    let log = dir.path().join("log");
    let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let args: Vec<String> = list(&container["args"]).iter().filter_map(|a| a.as_str().map(str::to_owned)).collect();
    let child = Command::new(&program)
        .args(&args)
        .env_clear()
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", program.display()))?;
    Ok(Pod { child, host, admin, log, _dir: dir })
}
