//! The keyset reader against injected cursor faults (a wire-protocol proxy
//! in front of the stand-in, or of `MONGODB_URI`): a cursor that ends early
//! and a cursor the server lost are both resumed after the last key, with
//! nothing read twice and nothing skipped, ties and mixed key types
//! included.

use std::collections::HashSet;

use mongodb::bson::{doc, oid::ObjectId, Document, RawDocumentBuf};
use vf_export::store::{Reader, Store};

use crate::common::mongo_faults::{self, Fault};
use crate::common::{insert, standins, unique};

async fn read_all(reader: &mut Reader) -> Vec<RawDocumentBuf> {
    let mut all = Vec::new();
    while let Some(batch) = reader.next_batch().await.expect("read") {
        all.extend(batch);
    }
    all
}

/// A proxy with `plan` and a store through it, on a fresh database.
async fn through_proxy(
    plan: Vec<(usize, Fault)>,
) -> Option<(mongo_faults::MongoProxy, Store, mongodb::Database)> {
    let Some(upstream) = mongo_faults::upstream_of(&standins().mongodb_uri) else {
        println!("skipped: MONGODB_URI is not a plain mongodb://host:port the proxy can front");
        return None;
    };
    let db_name = unique("t_");
    let proxy = mongo_faults::start(upstream, plan).await;
    let store = Store::connect(&proxy.uri, &db_name).await.unwrap();
    let direct = mongodb::Client::with_uri_str(&standins().mongodb_uri)
        .await
        .unwrap()
        .database(&db_name);
    Some((proxy, store, direct))
}

#[tokio::test]
async fn an_early_end_and_a_lost_cursor_are_resumed_exactly_ties_included() {
    let plan = vec![(2, Fault::EarlyEnd), (4, Fault::CursorNotFound)];
    let Some((proxy, store, db)) = through_proxy(plan.clone()).await else {
        return;
    };
    const N: i32 = 5_000;
    // Keys in groups of three (a code need not be unique): batches of
    // 1,000 end inside a group, so a resume starts among equal keys.
    let mut docs: Vec<Document> = (0..N)
        .map(|i| doc! { "_id": i, "g": "c1", "k": format!("k{:05}", i / 3) })
        .collect();
    docs.extend((0..3).map(|i| doc! { "_id": N + i, "g": "c2", "k": "k00000" }));
    insert(&db, "items", docs).await;

    let mut reader = Reader::new(&store, "items", doc! { "g": "c1" }, "k");
    let all = read_all(&mut reader).await;
    // Both faults happened: the test proved something.
    assert_eq!(
        proxy.injected(),
        plan,
        "getMores seen: {}",
        proxy.getmores()
    );
    let ids: Vec<i32> = all.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    let unique: HashSet<i32> = ids.iter().copied().collect();
    assert_eq!(ids.len(), N as usize, "documents handed out");
    assert_eq!(unique, (0..N).collect::<HashSet<_>>(), "each once");
    let keys: Vec<&str> = all.iter().map(|d| d.get_str("k").unwrap()).collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "key order");
    assert_eq!(reader.emitted(), N as u64);
    let _ = db.drop().await;
}

#[tokio::test]
async fn a_resume_reads_on_into_keys_of_a_later_type() {
    // A campaign whose keys are partly strings, partly ObjectIds (user ids
    // stored both ways): MongoDB's `$gte` stays within one type, so the
    // resumed reader must look for the later type itself.
    let plan = vec![(1, Fault::CursorNotFound)];
    let Some((proxy, store, db)) = through_proxy(plan.clone()).await else {
        return;
    };
    let mut docs: Vec<Document> = (0..2_500)
        .map(|i| doc! { "_id": i, "g": "c1", "k": format!("{i:024x}") })
        .collect();
    let oids: Vec<ObjectId> = (0..1_500).map(|_| ObjectId::new()).collect();
    docs.extend(
        oids.iter()
            .enumerate()
            .map(|(i, o)| doc! { "_id": 10_000 + i as i32, "g": "c1", "k": o }),
    );
    insert(&db, "items", docs).await;
    let mut reader = Reader::new(&store, "items", doc! { "g": "c1" }, "k");
    let all = read_all(&mut reader).await;
    assert_eq!(proxy.injected(), plan);
    let ids: HashSet<i32> = all.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    assert_eq!(all.len(), 4_000);
    assert_eq!(ids.len(), 4_000, "each once");
    let _ = db.drop().await;
}

#[tokio::test]
async fn a_limited_read_stops_at_its_limit_across_a_fault() {
    let plan = vec![(1, Fault::EarlyEnd)];
    let Some((proxy, store, db)) = through_proxy(plan.clone()).await else {
        return;
    };
    let docs: Vec<Document> = (0..3_000)
        .map(|i| doc! { "_id": i, "g": "c1", "k": i })
        .collect();
    insert(&db, "items", docs).await;
    let mut reader = Reader::new(&store, "items", doc! { "g": "c1" }, "k").limit(2_500);
    let all = read_all(&mut reader).await;
    assert_eq!(proxy.injected(), plan);
    let ids: Vec<i32> = all.iter().map(|d| d.get_i32("_id").unwrap()).collect();
    assert_eq!(ids, (0..2_500).collect::<Vec<_>>());
    let _ = db.drop().await;
}
