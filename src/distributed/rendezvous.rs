//! How ranks of separate processes find each other, the way `torchrun` sets them up:
//! `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`. Rank 0 serves a
//! small blob (NCCL's unique id) over TCP; every other rank connects, says who it is and
//! receives it. Both sides give up after a timeout with an error naming who is missing.
//!
//! The exchange: a peer sends `GSRV1`, its rank and the world size (u32, little endian);
//! rank 0 checks them (a rank in `1..world`, not seen before, the same world size) and
//! answers with the blob's length (u32) and the blob.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::base::{Error, Result};

const MAGIC: &[u8; 5] = b"GSRV1";
/// The largest blob served (NCCL's unique id is 128 bytes).
const MAX_BLOB: usize = 1 << 16;
/// Pause between a peer's attempts to reach rank 0.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

fn err(msg: String) -> Error {
    Error::invalid("rendezvous", msg)
}

/// A rank's place in a multi-process run, from torchrun's environment variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankEnv {
    /// `RANK`: this process's rank, 0 ≤ rank < world size.
    pub rank: usize,
    /// `WORLD_SIZE`: ranks in the run.
    pub world_size: usize,
    /// `LOCAL_RANK`: the rank among this node's processes, which picks its GPU
    /// (`RANK` when unset).
    pub local_rank: usize,
    /// `MASTER_ADDR`: where rank 0 listens (`127.0.0.1` when unset).
    pub master_addr: String,
    /// `MASTER_PORT`: the port rank 0 listens on (29500 when unset, as torchrun).
    pub master_port: u16,
}

impl RankEnv {
    /// The variables of this process; `None` when `WORLD_SIZE` is unset. Errors name the
    /// variable that is malformed or inconsistent.
    pub fn from_env() -> Result<Option<RankEnv>> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`Self::from_env`], reading the variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<RankEnv>> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |k: &str, v: &str| -> Result<usize> {
            v.trim()
                .parse::<usize>()
                .map_err(|_| err(format!("{k}=`{v}`: expected a whole number")))
        };
        let world_size = num("WORLD_SIZE", &world)?;
        if world_size == 0 {
            return Err(err("WORLD_SIZE=0: expected at least 1".into()));
        }
        let rank = match get("RANK") {
            Some(v) => num("RANK", &v)?,
            None => return Err(err("WORLD_SIZE is set but RANK is not".into())),
        };
        if rank >= world_size {
            return Err(err(format!("RANK={rank} with WORLD_SIZE={world_size}")));
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", &v)?,
            None => rank,
        };
        let master_addr = get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let master_port = match get("MASTER_PORT") {
            Some(v) => v
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| err(format!("MASTER_PORT=`{v}`: expected a port, 1-65535")))?,
            None => 29500,
        };
        Ok(Some(RankEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        }))
    }
}

/// Rank 0's listening socket.
pub struct Server {
    listener: TcpListener,
    addr: String,
}

impl Server {
    /// Listens on `addr:port` (port 0: any free port, see [`Self::port`]).
    pub fn bind(addr: &str, port: u16) -> Result<Server> {
        let listener = TcpListener::bind((addr, port))
            .map_err(|e| err(format!("rank 0 cannot listen on {addr}:{port}: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| err(format!("{addr}:{port}: {e}")))?;
        Ok(Server {
            listener,
            addr: format!("{addr}:{port}"),
        })
    }

    /// The port listened on.
    pub fn port(&self) -> Result<u16> {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| err(format!("{}: {e}", self.addr)))
    }

    /// Hands `blob` to each of the `world - 1` other ranks; returns once all have it.
    /// Errors: a peer that does not arrive within `timeout` (named), or one that says
    /// something else than this exchange expects.
    pub fn serve(&self, world: usize, blob: &[u8], timeout: Duration) -> Result<()> {
        if blob.len() > MAX_BLOB {
            return Err(err(format!(
                "a blob of {} bytes (at most {MAX_BLOB})",
                blob.len()
            )));
        }
        let deadline = Instant::now() + timeout;
        let mut served = vec![false; world];
        served[0] = true;
        while served.iter().any(|s| !s) {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let rank = greet(stream, world, &served, blob, deadline)?;
                    served[rank] = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<usize> = (0..world).filter(|&r| !served[r]).collect();
                        return Err(err(format!(
                            "rank(s) {missing:?} of {world} did not reach rank 0 at {} \
                             within {:.1} s",
                            self.addr,
                            timeout.as_secs_f64()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(err(format!("{}: {e}", self.addr))),
            }
        }
        Ok(())
    }
}

/// Reads one peer's greeting and answers it; the peer's rank.
fn greet(
    mut s: TcpStream,
    world: usize,
    served: &[bool],
    blob: &[u8],
    deadline: Instant,
) -> Result<usize> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    let io = |e: std::io::Error| err(format!("a peer's greeting: {e}"));
    s.set_nonblocking(false).map_err(io)?;
    s.set_read_timeout(Some(left)).map_err(io)?;
    s.set_write_timeout(Some(left)).map_err(io)?;
    let mut hello = [0u8; 13];
    s.read_exact(&mut hello).map_err(io)?;
    if &hello[..5] != MAGIC {
        return Err(err("a peer that is not a gradstep rank connected".into()));
    }
    let rank = u32::from_le_bytes(hello[5..9].try_into().unwrap_or_default()) as usize;
    let theirs = u32::from_le_bytes(hello[9..13].try_into().unwrap_or_default()) as usize;
    if theirs != world {
        return Err(err(format!(
            "rank {rank} says WORLD_SIZE={theirs}, rank 0 has {world}"
        )));
    }
    if rank == 0 || rank >= world || served[rank] {
        return Err(err(format!(
            "a peer claims rank {rank}, which is {} (world size {world})",
            if rank == 0 || rank >= world {
                "not a peer's rank"
            } else {
                "taken"
            }
        )));
    }
    s.write_all(&(blob.len() as u32).to_le_bytes())
        .map_err(io)?;
    s.write_all(blob).map_err(io)?;
    Ok(rank)
}

/// Rank `rank` of `world` fetches the blob rank 0 serves at `addr:port`, trying again
/// until `timeout` while nobody listens there yet.
pub fn fetch(
    addr: &str,
    port: u16,
    rank: usize,
    world: usize,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let target = format!("{addr}:{port}");
    let mut attempts = 0u32;
    let mut stream = loop {
        attempts += 1;
        let last = match target
            .to_socket_addrs()
            .map_err(|e| err(format!("{target}: {e}")))?
            .next()
        {
            Some(sa) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match TcpStream::connect_timeout(&sa, left.max(Duration::from_millis(10))) {
                    Ok(s) => break s,
                    Err(e) => e,
                }
            }
            None => return Err(err(format!("{target}: no address"))),
        };
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(err(format!(
                "rank {rank} could not reach rank 0 at {target} within {:.1} s \
                 ({attempts} attempts; last: {last})",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(RETRY_PAUSE);
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(10));
    let io = |e: std::io::Error| err(format!("rank {rank} talking to rank 0 at {target}: {e}"));
    stream.set_read_timeout(Some(left)).map_err(io)?;
    stream.set_write_timeout(Some(left)).map_err(io)?;
    let mut hello = Vec::with_capacity(13);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&(rank as u32).to_le_bytes());
    hello.extend_from_slice(&(world as u32).to_le_bytes());
    stream.write_all(&hello).map_err(io)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).map_err(io)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_BLOB {
        return Err(err(format!("rank 0 at {target} announced {len} bytes")));
    }
    let mut blob = vec![0u8; len];
    stream.read_exact(&mut blob).map_err(io)?;
    Ok(blob)
}
