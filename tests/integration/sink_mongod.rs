//! A private `mongod` (single-node replica set) that a test may stop and restart without
//! touching the shared one other tests use. Same binary as `scripts/mongodb.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use mongodb::options::ClientOptions;

use crate::support::{ChildProcess, SERVICE_TIMEOUT, free_local_address};

pub struct PrivateMongod {
    pub port: u16,
    dbpath: PathBuf,
    log: PathBuf,
    process: Option<ChildProcess>,
}

fn mongod_binary() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    let path = Path::new(&home).join(".cache/tickstream/mongodb-6.0.5/fiftyone/db/bin/mongod");
    assert!(
        path.exists(),
        "{} is missing: `make services-up` (scripts/mongodb.sh install) installs it",
        path.display()
    );
    path
}

impl PrivateMongod {
    /// Starts on a free port with its data in `dir`, initiates the replica set and waits until
    /// it is a writable primary.
    pub async fn start(dir: &Path) -> Self {
        let dbpath = dir.join("mongod-data");
        std::fs::create_dir_all(&dbpath).expect("create the dbpath");
        let mut mongod = Self {
            port: free_local_address().port(),
            dbpath,
            log: dir.join("mongod.log"),
            process: None,
        };
        mongod.spawn();
        let admin = mongod.direct_client().await.database("admin");
        let config = doc! {
            "_id": "rs0",
            "members": [{ "_id": 0, "host": format!("127.0.0.1:{}", mongod.port) }],
        };
        let deadline = Instant::now() + SERVICE_TIMEOUT;
        loop {
            match admin
                .run_command(doc! { "replSetInitiate": config.clone() })
                .await
            {
                Ok(_) => break,
                Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 23) =>
                {
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "replSetInitiate failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        mongod.wait_for_primary().await;
        mongod
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?replicaSet=rs0", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new(mongod_binary());
        command
            .arg("--dbpath")
            .arg(&self.dbpath)
            .args(["--bind_ip", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--replSet", "rs0", "--wiredTigerCacheSizeGB", "0.25"])
            .args(["--setParameter", "diagnosticDataCollectionEnabled=false"])
            .arg("--logpath")
            .arg(&self.log)
            .arg("--logappend");
        self.process = Some(ChildProcess::spawn(
            "the private mongod",
            command,
            &self.log.with_extension("out"),
        ));
    }

    async fn direct_client(&self) -> mongodb::Client {
        let mut options = ClientOptions::parse(format!(
            "mongodb://127.0.0.1:{}/?directConnection=true",
            self.port
        ))
        .await
        .expect("a valid URI");
        options.server_selection_timeout = Some(Duration::from_secs(2));
        mongodb::Client::with_options(options).expect("valid options")
    }

    /// Polls `hello` until this node is a writable primary.
    pub async fn wait_for_primary(&self) {
        let client = self.direct_client().await;
        let deadline = Instant::now() + SERVICE_TIMEOUT;
        loop {
            let hello = client
                .database("admin")
                .run_command(doc! { "hello": 1 })
                .await;
            if let Ok(hello) = &hello
                && hello.get_bool("isWritablePrimary") == Ok(true)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private mongod on port {} is not a writable primary after \
                 {SERVICE_TIMEOUT:?} ({hello:?}); log: {}",
                self.port,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM and wait for the exit (a clean stop, like a maintenance restart).
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            let status = process.terminate();
            assert!(status.success(), "mongod exited with {status}");
        }
    }

    /// Starts again on the same port and data.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_for_primary().await;
    }
}
