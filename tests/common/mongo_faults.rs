//! A MongoDB wire-protocol proxy that answers chosen `getMore` commands
//! itself: with an empty last batch (a cursor that "ends" early, as the
//! stand-in answers a cursor it lost) or with `CursorNotFound` (what
//! MongoDB answers after a failover or an idle timeout). Everything else is
//! forwarded byte for byte, so the driver under test is the real one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use mongodb::bson::{doc, Document};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OP_MSG: i32 = 2013;

/// What to answer the n-th `getMore` (counted from 1 over all connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `{cursor: {id: 0, nextBatch: []}, ok: 1}`.
    EarlyEnd,
    /// `{ok: 0, code: 43, codeName: "CursorNotFound"}`.
    CursorNotFound,
}

pub struct MongoProxy {
    pub uri: String,
    getmores: Arc<AtomicUsize>,
    faults_done: Arc<Mutex<Vec<(usize, Fault)>>>,
}

impl MongoProxy {
    /// `getMore`s seen so far.
    pub fn getmores(&self) -> usize {
        self.getmores.load(Ordering::SeqCst)
    }
    /// The faults injected so far, with their `getMore` number.
    pub fn injected(&self) -> Vec<(usize, Fault)> {
        self.faults_done.lock().unwrap().clone()
    }
}

/// The host and port of a plain `mongodb://host:port/...` URI (`None` for
/// SRV or several hosts: the proxy cannot stand in front of those).
pub fn upstream_of(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mongodb://")?;
    let hosts = rest.split(['/', '?']).next()?;
    let hosts = hosts.rsplit('@').next()?;
    (!hosts.contains(',')).then(|| hosts.to_string())
}

/// Start a proxy in front of `upstream` (`host:port`) injecting `plan`.
pub async fn start(upstream: String, plan: Vec<(usize, Fault)>) -> MongoProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let getmores = Arc::new(AtomicUsize::new(0));
    let faults_done = Arc::new(Mutex::new(Vec::new()));
    let plan = Arc::new(plan);
    let (g, f) = (getmores.clone(), faults_done.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = match TcpStream::connect(&upstream).await {
                Ok(s) => s,
                Err(_) => continue,
            };
            tokio::spawn(relay(client, server, plan.clone(), g.clone(), f.clone()));
        }
    });
    MongoProxy {
        uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
        getmores,
        faults_done,
    }
}

async fn read_msg(s: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let n = i32::from_le_bytes(len) as usize;
    let mut msg = vec![0u8; n];
    msg[..4].copy_from_slice(&len);
    s.read_exact(&mut msg[4..]).await.ok()?;
    Some(msg)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The body (section kind 0) of an OP_MSG.
fn body_of(msg: &[u8]) -> Option<Document> {
    if i32_at(msg, 12) != OP_MSG || msg.get(20) != Some(&0) {
        return None;
    }
    Document::from_reader(&msg[21..]).ok()
}

fn op_msg(response_to: i32, body: &Document) -> Vec<u8> {
    let mut doc_bytes = Vec::new();
    body.to_writer(&mut doc_bytes).unwrap();
    let len = 16 + 4 + 1 + doc_bytes.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as i32).to_le_bytes());
    m.extend_from_slice(&0x7fff_0000i32.to_le_bytes());
    m.extend_from_slice(&response_to.to_le_bytes());
    m.extend_from_slice(&OP_MSG.to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes());
    m.push(0);
    m.extend_from_slice(&doc_bytes);
    m
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    plan: Arc<Vec<(usize, Fault)>>,
    getmores: Arc<AtomicUsize>,
    done: Arc<Mutex<Vec<(usize, Fault)>>>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Request ids of the getMores to answer here, with the answer.
    let pending: Arc<Mutex<Vec<(i32, Fault, String)>>> = Arc::default();
    let p = pending.clone();
    let up = async move {
        while let Some(msg) = read_msg(&mut cr).await {
            if let Some(body) = body_of(&msg) {
                if body.keys().next().map(String::as_str) == Some("getMore") {
                    let n = getmores.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Some((_, fault)) = plan.iter().find(|(k, _)| *k == n) {
                        let ns = format!(
                            "{}.{}",
                            body.get_str("$db").unwrap_or("db"),
                            body.get_str("collection").unwrap_or("c")
                        );
                        p.lock().unwrap().push((i32_at(&msg, 4), *fault, ns));
                        done.lock().unwrap().push((n, *fault));
                    }
                }
            }
            if sw.write_all(&msg).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        while let Some(msg) = read_msg(&mut sr).await {
            let response_to = i32_at(&msg, 8);
            let fault = {
                let mut p = pending.lock().unwrap();
                p.iter()
                    .position(|(id, _, _)| *id == response_to)
                    .map(|i| p.remove(i))
            };
            let out = match fault {
                None => msg,
                Some((_, Fault::EarlyEnd, ns)) => op_msg(
                    response_to,
                    &doc! { "cursor": { "id": 0i64, "ns": ns, "nextBatch": [] }, "ok": 1.0 },
                ),
                Some((_, Fault::CursorNotFound, _)) => op_msg(
                    response_to,
                    &doc! {
                        "ok": 0.0, "errmsg": "cursor not found (injected)",
                        "code": 43, "codeName": "CursorNotFound",
                    },
                ),
            };
            if cw.write_all(&out).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        _ = up => {},
        _ = down => {},
    }
}
