//! Records, reads, lists and deletes snapshots; each change is confirmed by read-back.
//!
//! ```sh
//! cargo xtask testbed up
//! cargo run -p gater-api --example snapshots
//! ```

#[path = "common/mod.rs"]
mod common;

use gater_api::Term;
use gater_term::build::{binary, int, map};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gater = common::connect().await?;
    let store = common::store();
    let source = format!("example-cart-{}", gater_api::uuid_v7());
    let record: Term = map([
        (binary(b"items".to_vec()), int(3)),
        (binary(b"total".to_vec()), int(4200)),
    ]);

    gater
        .record_snapshot(store.as_str(), &source, "cart-stream", 7, record)
        .await?;
    println!("recorded (and read back) a snapshot of {source} at version 7");

    if let Some(s) = gater
        .read_snapshot(store.as_str(), &source, "cart-stream", 7)
        .await?
    {
        println!("read: {}", s.record_json());
    }
    for s in gater
        .list_snapshots(store.as_str(), Some(&source), None)
        .await?
    {
        println!("listed: {} {} v{}", s.source_uuid, s.stream_uuid, s.version);
    }
    gater
        .delete_snapshot(store.as_str(), &source, "cart-stream", 7)
        .await?;
    let gone = gater
        .read_snapshot(store.as_str(), &source, "cart-stream", 7)
        .await?;
    println!("after delete: {gone:?}");
    Ok(())
}
