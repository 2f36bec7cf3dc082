//! Holder processes: the connections scenario's sockets are spread over child processes
//! (`loadgen hold`), because one process may open only as many files as its hard limit allows
//! (20,000 on the bench machine) and 50,000 connections need more. The parent sends each
//! holder orders as JSON lines on its stdin; the holder answers each with one report line.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::problems::{Counted, Problems};
use crate::ws::{self, Profile, Socket};

/// Sockets one holder is given at most: its open-files limit less room for its own files.
pub const PER_HOLDER: usize = 16_000;

/// One socket to open: which connection of the scenario it is (it picks the source
/// address), where to and as whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Opening {
    pub index: usize,
    pub url: String,
    pub token: String,
}

/// What the parent asks of a holder.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Order {
    /// Open these sockets, `concurrency` at a time, and keep them heartbeating.
    Open {
        sockets: Vec<Opening>,
        concurrency: usize,
        heartbeat_secs: f64,
    },
    /// Close every socket, answer, and exit.
    Close,
}

/// A holder's answer to one order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Sockets open now.
    pub open: usize,
    /// Why each socket of this order that failed to open failed.
    pub failures: Vec<String>,
    /// What went wrong with open sockets so far (closed by the server, a failed heartbeat).
    pub problems: Vec<Counted>,
}

/// The source address of connection `index`; the scenario owns the spreading rule.
pub type SourceOf = fn(usize) -> Option<std::net::IpAddr>;

/// `loadgen hold`: follows the orders on stdin until `Close` or the end of stdin.
pub async fn serve(source: SourceOf) -> anyhow::Result<()> {
    let mut orders = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let stop = CancellationToken::new();
    let problems = Arc::new(Problems::default());
    let mut holders: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    loop {
        let order = match orders.next_line().await? {
            Some(line) => serde_json::from_str::<Order>(&line).context("an undecodable order")?,
            None => Order::Close,
        };
        let mut report = Report::default();
        let closing = matches!(order, Order::Close);
        match order {
            Order::Open {
                sockets,
                concurrency,
                heartbeat_secs,
            } => {
                let heartbeat = Duration::from_secs_f64(heartbeat_secs.max(1.0));
                // Each socket starts heartbeating as soon as it is open: one that waited for
                // the others would say nothing to the edge for as long as they take.
                let opened = stream::iter(sockets)
                    .map(|socket| async move {
                        ws::connect_from(
                            &socket.url,
                            &socket.token,
                            Profile::Idle,
                            source(socket.index),
                        )
                        .await
                    })
                    .buffer_unordered(concurrency.max(1));
                let mut opened = std::pin::pin!(opened);
                while let Some(result) = opened.next().await {
                    match result {
                        Ok(socket) => holders.push(tokio::spawn(hold(
                            socket,
                            heartbeat,
                            stop.clone(),
                            problems.clone(),
                        ))),
                        Err(err) => report.failures.push(format!("{err:#}")),
                    }
                }
            }
            Order::Close => {
                stop.cancel();
                for holder in holders.drain(..) {
                    let _ = holder.await;
                }
            }
        }
        report.open = holders.iter().filter(|h| !h.is_finished()).count();
        report.problems = problems.counted();
        let mut line = serde_json::to_vec(&report)?;
        line.push(b'\n');
        out.write_all(&line).await?;
        out.flush().await?;
        if closing {
            return Ok(());
        }
    }
}

/// Keeps a socket open and heartbeating: a `ping` frame every `heartbeat` (first one at a
/// random point of the period), reading everything (which answers the server's pings).
async fn hold(
    mut socket: Socket,
    heartbeat: Duration,
    stop: CancellationToken,
    problems: Arc<Problems>,
) {
    let first = heartbeat.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, heartbeat);
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {
                if let Err(err) = socket.send(Message::text(r#"{"type":"ping"}"#)).await {
                    problems.add("heartbeat failed", || err.to_string());
                    return;
                }
                continue;
            }
            message = socket.next() => message,
        };
        match message {
            Some(Ok(Message::Close(frame))) => {
                let close = ws::describe_close(&Message::Close(frame)).unwrap_or_default();
                problems.add("socket closed by the server", || close);
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                problems.add("socket failed", || err.to_string());
                return;
            }
            None => {
                problems.add("socket ended", String::new);
                return;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
}

/// One holder process, seen from the parent.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    reports: Lines<BufReader<ChildStdout>>,
}

/// How long a holder may take to answer one order (opening 16,000 sockets on a busy machine
/// takes a minute or two); past it the scenario fails and the holders are killed.
const ASK_TIMEOUT: Duration = Duration::from_secs(600);

impl Holder {
    async fn ask(&mut self, order: &Order) -> anyhow::Result<Report> {
        let mut line = serde_json::to_vec(order)?;
        line.push(b'\n');
        let answered = async {
            self.stdin.write_all(&line).await?;
            self.stdin.flush().await?;
            match self.reports.next_line().await? {
                Some(line) => serde_json::from_str(&line).context("an undecodable holder report"),
                None => bail!("a holder process ended ({:?})", self.child.try_wait()),
            }
        };
        tokio::time::timeout(ASK_TIMEOUT, answered)
            .await
            .with_context(|| format!("a holder did not answer within {ASK_TIMEOUT:?}"))?
    }
}

/// The holder processes of one scenario; sockets go to them in turn.
pub struct Holders {
    holders: Vec<Holder>,
}

/// What all holders answered to one order.
#[derive(Debug, Default)]
pub struct Total {
    pub open: usize,
    pub failures: Vec<String>,
    /// The holders' problems merged by kind, one line each.
    pub problems: Vec<String>,
}

/// How many holders `sockets` need.
pub fn holders_for(sockets: usize) -> usize {
    sockets.div_ceil(PER_HOLDER).max(1)
}

impl Holders {
    /// Starts `count` holders: this program again, as `loadgen hold`.
    pub fn spawn(count: usize) -> anyhow::Result<Self> {
        let program = std::env::current_exe().context("finding the loadgen executable")?;
        let mut holders = Vec::with_capacity(count);
        for _ in 0..count {
            let mut child = tokio::process::Command::new(&program)
                .arg("hold")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a holder process")?;
            let stdin = child.stdin.take().context("a holder's stdin")?;
            let stdout = child.stdout.take().context("a holder's stdout")?;
            holders.push(Holder {
                child,
                stdin,
                reports: BufReader::new(stdout).lines(),
            });
        }
        Ok(Self { holders })
    }

    /// Opens `sockets`, the `k`th holder taking those whose index is `k` modulo the holders;
    /// answers what every holder holds afterwards.
    pub async fn open(
        &mut self,
        sockets: Vec<Opening>,
        concurrency: usize,
        heartbeat: Duration,
    ) -> anyhow::Result<Total> {
        let count = self.holders.len();
        let mut shares: Vec<Vec<Opening>> = (0..count).map(|_| Vec::new()).collect();
        for socket in sockets {
            shares[socket.index % count].push(socket);
        }
        let per_holder = concurrency.div_ceil(count).max(1);
        let asks = self.holders.iter_mut().zip(shares).map(|(holder, share)| {
            let order = Order::Open {
                sockets: share,
                concurrency: per_holder,
                heartbeat_secs: heartbeat.as_secs_f64(),
            };
            async move { holder.ask(&order).await }
        });
        Self::sum(futures::future::join_all(asks).await)
    }

    /// Closes every socket and ends the holders.
    pub async fn close(mut self) -> anyhow::Result<Total> {
        let asks = self
            .holders
            .iter_mut()
            .map(|holder| async move { holder.ask(&Order::Close).await });
        let total = Self::sum(futures::future::join_all(asks).await)?;
        for holder in &mut self.holders {
            let _ = tokio::time::timeout(Duration::from_secs(10), holder.child.wait()).await;
        }
        Ok(total)
    }

    fn sum(reports: Vec<anyhow::Result<Report>>) -> anyhow::Result<Total> {
        let mut total = Total::default();
        let problems = Problems::default();
        for report in reports {
            let report = report?;
            total.open += report.open;
            total.failures.extend(report.failures);
            report.problems.into_iter().for_each(|p| problems.absorb(p));
        }
        total.problems = problems.lines();
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_read_back_as_written() {
        let order = Order::Open {
            sockets: vec![Opening {
                index: 7,
                url: "ws://127.0.0.1:1/v1/ws".into(),
                token: "t".into(),
            }],
            concurrency: 4,
            heartbeat_secs: 20.0,
        };
        let line = serde_json::to_string(&order).unwrap();
        match serde_json::from_str::<Order>(&line).unwrap() {
            Order::Open { sockets, .. } => assert_eq!(sockets[0].index, 7),
            Order::Close => panic!("read back as close"),
        }
        assert!(matches!(
            serde_json::from_str::<Order>(r#""close""#).unwrap(),
            Order::Close
        ));
    }

    #[test]
    fn fifty_thousand_sockets_need_four_holders() {
        assert_eq!(holders_for(0), 1);
        assert_eq!(holders_for(PER_HOLDER), 1);
        assert_eq!(holders_for(PER_HOLDER + 1), 2);
        assert_eq!(holders_for(50_000), 4);
    }
}
