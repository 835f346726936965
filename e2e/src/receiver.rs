//! A webhook receiver for event tests and benchmarks: an HTTP/1.1 server on a loopback port
//! that records every request and answers 200, and can be stopped and started again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

use crate::free_port;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Headers, names in lowercase.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::SystemTime,
}

/// An HTTP endpoint on a fixed loopback port that records every POST and answers 200; it can
/// be stopped (connections refused) and started again.
pub struct Receiver {
    /// Its port.
    pub port: u16,
    got: Arc<Mutex<Vec<Delivery>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Receiver {
    /// Starts one on a free port.
    pub async fn start() -> Receiver {
        let receiver = Receiver { port: free_port(), got: Arc::default(), task: Mutex::new(None) };
        receiver.up().await;
        receiver
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Listens (again).
    pub async fn up(&self) {
        let listener =
            TcpListener::bind(("127.0.0.1", self.port)).await.unwrap_or_else(|e| panic!("bind the receiver: {e}"));
        let got = self.got.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: stopping the receiver drops them all.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let got = got.clone();
                connections.spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    loop {
                        let mut headers = HashMap::new();
                        let mut line = String::new();
                        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            line.clear();
                            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let Some((name, value)) = line.trim_end().split_once(':') else { break };
                            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
                        }
                        let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
                        let mut body = vec![0; length];
                        if read.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        got.lock().unwrap_or_else(PoisonError::into_inner).push(Delivery {
                            headers,
                            body,
                            at: std::time::SystemTime::now(),
                        });
                        if write.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// Stops listening and drops its connections.
    pub async fn down(&self) {
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Every request so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every CloudEvent received, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.deliveries()
            .iter()
            .flat_map(|d| match serde_json::from_slice::<Value>(&d.body).unwrap_or_else(|e| panic!("JSON body: {e}")) {
                Value::Array(batch) => batch,
                one => vec![one],
            })
            .collect()
    }
}
