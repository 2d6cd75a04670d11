//! The outbound WebSocket clients of one container (`sdk/net`, SPEC 5.4). The host
//! owns them, so they outlive a worker restart or hot swap; they close when the
//! container goes. At most [`MAX_CLIENTS_PER_CONTAINER`] at once.

use super::client::{self, Client, ClientEvents};
use mimhost_bindings::{
    ClientAnswer, ClientCall, ClientData, ClientEvent, ClientOp, MAX_CLIENTS_PER_CONTAINER,
    MAX_QUEUED_CLIENT_SENDS,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Client ids are unique on the host.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// The clients of one container, oldest first.
#[derive(Default)]
pub struct ClientSet {
    clients: Arc<Mutex<Vec<Arc<Client>>>>,
    stopped: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientSet {
    /// Answers an `sdk/net` call of the container's code (the worker has checked a
    /// new client's handler module); `events` is where new clients' events go.
    pub fn call(&self, call: ClientCall, events: Weak<dyn ClientEvents>) -> ClientAnswer {
        match call {
            ClientCall::Create { uri, handler } => match self.create(uri, handler, events) {
                Ok(data) => ClientAnswer::Client(Some(data)),
                Err(why) => ClientAnswer::Refused(why),
            },
            ClientCall::List => ClientAnswer::Clients(self.listed().collect()),
            ClientCall::Get(id) => ClientAnswer::Client(self.listed().find(|c| c.id == id)),
            ClientCall::ByHandler(handler) => {
                ClientAnswer::Client(self.listed().find(|c| c.handler == handler))
            }
        }
    }

    /// The open and opening clients (not those closing), oldest first.
    fn listed(&self) -> impl Iterator<Item = ClientData> {
        let all: Vec<ClientData> = lock(&self.clients)
            .iter()
            .filter(|c| !c.closing())
            .map(|c| c.data())
            .collect();
        all.into_iter()
    }

    fn create(
        &self,
        uri: String,
        handler: String,
        events: Weak<dyn ClientEvents>,
    ) -> Result<ClientData, String> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err("createWebsocket: the container is stopping".into());
        }
        client::check_uri(&uri).map_err(|e| e.to_string())?;
        let mut all = lock(&self.clients);
        if all.len() >= MAX_CLIENTS_PER_CONTAINER {
            return Err(format!(
                "createWebsocket: this container already has {MAX_CLIENTS_PER_CONTAINER} WebSocket clients open, opening or closing (the limit); close one first"
            ));
        }
        let n = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let data = ClientData {
            id: format!("client-{n}"),
            uri,
            handler,
            open: false,
        };
        let list = Arc::downgrade(&self.clients);
        let client = client::start(
            data.clone(),
            MAX_QUEUED_CLIENT_SENDS,
            events.clone(),
            move |id| {
                if let Some(list) = list.upgrade() {
                    lock(&list).retain(|c| c.data().id != id);
                }
            },
        );
        all.push(client);
        Ok(data)
    }

    /// Applies a send or close of the container's code; a send the client cannot
    /// queue is reported to its handler's `onError`.
    pub fn apply(&self, op: ClientOp, events: &dyn ClientEvents) {
        let id = match &op {
            ClientOp::Send { client, .. } | ClientOp::Close { client } => client.clone(),
        };
        let found = lock(&self.clients)
            .iter()
            .find(|c| c.data().id == id)
            .cloned();
        let Some(client) = found else {
            tracing::debug!(client = %id, "operation on a client that is gone: ignored");
            return;
        };
        match op {
            ClientOp::Send { text, .. } => {
                if !client.send(text) {
                    let data = client.data();
                    events.client_event(ClientEvent {
                        client: data.id,
                        handler: data.handler,
                        kind: "error".into(),
                        message: None,
                        error: Some(format!(
                            "the send queue is full ({MAX_QUEUED_CLIENT_SENDS} messages): the message was dropped"
                        )),
                    });
                }
            }
            ClientOp::Close { .. } => client.close(),
        }
    }

    /// Closes every client at once (the container is removed or never started).
    pub fn close_all(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        for c in lock(&self.clients).iter() {
            c.stop();
        }
    }
}
