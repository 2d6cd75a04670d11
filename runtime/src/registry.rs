//! The running containers: start, hot swap, remove, and routing by base path.

use crate::endpoints::{Endpoint, ENDPOINT_PREFIX};
use crate::supervisor::{Call, InvokeError, Supervisor, WorkerEvents, WorkerLimits};
use mimhost_bindings::MimSpec;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Where a container came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A drop-in mim in the `mims/` folder.
    MimsFolder,
    /// Created through the MCM API.
    Deployed,
}

/// Why a container could not be started or swapped. The MCM API picks a status by
/// variant (409 for what is taken, 400 for code that does not load).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// Another container has this name.
    #[error("a container named '{name}' already exists")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// Another container serves at this base path.
    #[error("base path {base_path} is already used by container '{owner}'")]
    BasePathTaken {
        /// The base path.
        base_path: String,
        /// The container using it.
        owner: String,
    },
    /// Another container serves this Dirigible endpoint.
    #[error(
        "WebSocket endpoint {ENDPOINT_PREFIX}{endpoint} is already used by container '{owner}'"
    )]
    EndpointTaken {
        /// The endpoint name.
        endpoint: String,
        /// The container serving it.
        owner: String,
    },
    /// The mim's endpoint descriptors are wrong.
    #[error("{message}")]
    BadEndpoints {
        /// What is wrong, naming the file.
        message: String,
    },
    /// No container has this name.
    #[error("no container named '{name}'")]
    NotFound {
        /// The name.
        name: String,
    },
    /// A hot swap would move the base path.
    #[error(
        "the base path of '{name}' cannot change in place ({from} -> {to}); remove and create it"
    )]
    BasePathFixed {
        /// The container.
        name: String,
        /// Its base path.
        from: String,
        /// The one asked for.
        to: String,
    },
    /// Starting or loading in the worker failed (the code did not load, …).
    #[error(transparent)]
    Invoke(#[from] InvokeError),
}

/// A running container.
pub struct Container {
    /// Container name.
    pub name: String,
    /// `MCM.BASE_API_PATH`, normalised (leading `/`, no trailing `/`).
    pub base_path: String,
    /// Where it came from.
    pub origin: Origin,
    /// Its worker.
    pub supervisor: Arc<Supervisor>,
}

/// All containers of this node.
pub struct Registry {
    containers: RwLock<Vec<Arc<Container>>>,
    data: PathBuf,
    limits: WorkerLimits,
    events: Arc<dyn WorkerEvents>,
    /// Dirigible endpoints (SPEC 5.4), unique on the host: name -> (container, endpoint).
    endpoints: RwLock<HashMap<String, (String, Endpoint)>>,
}

/// The base path a container gets: `MCM.BASE_API_PATH` from its env, else `/<name>`.
pub fn base_path_for(name: &str, env: &std::collections::BTreeMap<String, String>) -> String {
    let raw = env
        .get("MCM.BASE_API_PATH")
        .cloned()
        .unwrap_or_else(|| format!("/{name}"));
    let trimmed = raw.trim().trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// An empty registry keeping stores under `data`.
    pub fn new(data: PathBuf, limits: WorkerLimits, events: Arc<dyn WorkerEvents>) -> Self {
        Self {
            containers: RwLock::new(Vec::new()),
            data,
            limits,
            events,
            endpoints: RwLock::default(),
        }
    }

    /// The container whose base path is the longest prefix of `path`, and the rest of
    /// the path relative to it (always starting with `/`).
    pub fn route(&self, path: &str) -> Option<(Arc<Container>, String)> {
        read(&self.containers)
            .iter()
            .filter_map(|c| {
                let rest = path.strip_prefix(c.base_path.as_str())?;
                (rest.is_empty() || rest.starts_with('/') || c.base_path == "/")
                    .then_some((c, rest))
            })
            .max_by_key(|(c, _)| c.base_path.len())
            .map(|(c, rest)| {
                let rest = if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                };
                (c.clone(), rest)
            })
    }

    /// The container called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Container>> {
        read(&self.containers)
            .iter()
            .find(|c| c.name == name)
            .cloned()
    }

    /// Every container, by name.
    pub fn list(&self) -> Vec<Arc<Container>> {
        let mut all = read(&self.containers).clone();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Starts a new container; refuses a taken name or base path and code that does
    /// not load (nothing is left running then).
    pub async fn start(
        &self,
        spec: MimSpec,
        origin: Origin,
    ) -> Result<Arc<Container>, RegistryError> {
        self.check_free(&spec.name, &spec.base_path)?;
        let endpoints =
            crate::endpoints::discover(&spec).map_err(|e| RegistryError::BadEndpoints {
                message: e.to_string(),
            })?;
        self.claim_endpoints(&spec.name, &endpoints)?;
        let store = crate::worker::store_dir(&self.data, &spec.name);
        let base_path = spec.base_path.clone();
        let name = spec.name.clone();
        let supervisor =
            match Supervisor::start(spec, store, self.limits.clone(), self.events.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    self.release_endpoints(&name);
                    return Err(e.into());
                }
            };
        let container = Arc::new(Container {
            name,
            base_path,
            origin,
            supervisor,
        });
        if let Err(e) = self.check_free(&container.name, &container.base_path) {
            container.supervisor.stop().await;
            return Err(e);
        }
        write(&self.containers).push(container.clone());
        Ok(container)
    }

    /// Makes `wanted` the endpoints of `container` (replacing what it had); refuses,
    /// changing nothing, when another container serves one of them. Returns what the
    /// container had before.
    fn claim_endpoints(
        &self,
        container: &str,
        wanted: &[Endpoint],
    ) -> Result<Vec<Endpoint>, RegistryError> {
        let mut all = write(&self.endpoints);
        for e in wanted {
            if let Some((owner, _)) = all.get(&e.endpoint).filter(|(o, _)| o != container) {
                return Err(RegistryError::EndpointTaken {
                    endpoint: e.endpoint.clone(),
                    owner: owner.clone(),
                });
            }
        }
        let previous: Vec<Endpoint> = all
            .values()
            .filter(|(o, _)| o == container)
            .map(|(_, e)| e.clone())
            .collect();
        all.retain(|_, (o, _)| o != container);
        for e in wanted {
            all.insert(e.endpoint.clone(), (container.to_string(), e.clone()));
        }
        Ok(previous)
    }

    /// Gives `container` back the endpoints it had (a hot swap that failed).
    fn restore_endpoints(&self, container: &str, previous: Vec<Endpoint>) {
        let mut all = write(&self.endpoints);
        all.retain(|_, (o, _)| o != container);
        for e in previous {
            all.entry(e.endpoint.clone())
                .or_insert_with(|| (container.to_string(), e));
        }
    }

    /// Frees the endpoints of a container that stops.
    fn release_endpoints(&self, container: &str) {
        write(&self.endpoints).retain(|_, (o, _)| o != container);
    }

    /// The container serving Dirigible endpoint `name`, and the endpoint.
    pub fn endpoint(&self, name: &str) -> Option<(Arc<Container>, Endpoint)> {
        let (container, endpoint) = read(&self.endpoints).get(name).cloned()?;
        Some((self.get(&container)?, endpoint))
    }

    fn check_free(&self, name: &str, base_path: &str) -> Result<(), RegistryError> {
        for c in read(&self.containers).iter() {
            if c.name == name {
                return Err(RegistryError::NameTaken {
                    name: name.to_string(),
                });
            }
            if c.base_path == base_path {
                return Err(RegistryError::BasePathTaken {
                    base_path: base_path.to_string(),
                    owner: c.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Hot swaps a container to new code/env; sessions stay, a failed load keeps the old.
    pub async fn update(&self, spec: MimSpec) -> Result<(), RegistryError> {
        let container = self
            .get(&spec.name)
            .ok_or_else(|| RegistryError::NotFound {
                name: spec.name.clone(),
            })?;
        if container.base_path != spec.base_path {
            return Err(RegistryError::BasePathFixed {
                name: spec.name.clone(),
                from: container.base_path.clone(),
                to: spec.base_path.clone(),
            });
        }
        let endpoints =
            crate::endpoints::discover(&spec).map_err(|e| RegistryError::BadEndpoints {
                message: e.to_string(),
            })?;
        let previous = self.claim_endpoints(&spec.name, &endpoints)?;
        let name = spec.name.clone();
        let reloaded = container.supervisor.invoke(Call::Load(spec)).await;
        if let Err(e) = reloaded {
            self.restore_endpoints(&name, previous);
            return Err(e.into());
        }
        Ok(())
    }

    /// Stops and removes a container.
    pub async fn remove(&self, name: &str) -> Option<Arc<Container>> {
        let removed = {
            let mut all = write(&self.containers);
            let at = all.iter().position(|c| c.name == name)?;
            all.remove(at)
        };
        self.release_endpoints(name);
        removed.supervisor.stop().await;
        Some(removed)
    }

    /// Stops every container (their stores are flushed).
    pub async fn stop_all(&self) {
        let all = std::mem::take(&mut *write(&self.containers));
        for c in all {
            c.supervisor.stop().await;
        }
    }
}
