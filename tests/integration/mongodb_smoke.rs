//! The database does what the sink will rely on: unordered bulk inserts with deterministic
//! `_id`s are idempotent, and duplicate-key errors are told apart from other failures.

use mongodb::bson::{DateTime, Document, doc};
use mongodb::error::{ErrorKind, InsertManyError, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};

use crate::support::{require_mongodb, unique_name};

/// MongoDB's code for a unique-index violation (E11000).
const DUPLICATE_KEY: i32 = 11000;

fn price_documents(range: std::ops::Range<u32>) -> Vec<Document> {
    range
        .map(|i| {
            doc! {
                "_id": format!("BTCUSDT:{i:08}"),
                "symbol": "BTCUSDT",
                "price": 67_000.0 + f64::from(i) / 100.0,
                "ts": DateTime::from_millis(1_732_390_000_000 + i64::from(i)),
            }
        })
        .collect()
}

/// Inserts unordered and returns the indexes of the documents rejected as duplicates; any
/// other failure fails the test.
async fn insert_unordered(collection: &Collection<Document>, documents: &[Document]) -> Vec<usize> {
    match collection.insert_many(documents).ordered(false).await {
        Ok(result) => {
            assert_eq!(result.inserted_ids.len(), documents.len());
            Vec::new()
        }
        Err(error) => match *error.kind {
            ErrorKind::InsertMany(InsertManyError {
                write_errors: Some(ref errors),
                write_concern_error: None,
                ..
            }) => errors
                .iter()
                .map(|e| {
                    assert_eq!(e.code, DUPLICATE_KEY, "not a duplicate-key error: {e:?}");
                    e.index
                })
                .collect(),
            _ => panic!("insert_many failed for another reason than duplicates: {error}"),
        },
    }
}

#[tokio::test]
async fn unordered_bulk_insert_with_deterministic_ids_is_idempotent() {
    let client = require_mongodb().await;
    let database = client.database(&unique_name("smoke"));
    let prices = database.collection::<Document>("prices");

    let documents = price_documents(0..10_000);
    assert!(insert_unordered(&prices, &documents).await.is_empty());
    let rejected = insert_unordered(&prices, &documents).await;
    assert_eq!(
        rejected,
        (0..10_000).collect::<Vec<_>>(),
        "every replayed document is a duplicate"
    );
    assert_eq!(
        prices.count_documents(doc! {}).await.expect("count"),
        10_000
    );

    // A batch mixing replayed and new documents: the new ones land, only the old are rejected.
    let mixed = price_documents(9_995..10_005);
    assert_eq!(insert_unordered(&prices, &mixed).await, vec![0, 1, 2, 3, 4]);
    assert_eq!(
        prices.count_documents(doc! {}).await.expect("count"),
        10_005
    );

    database.drop().await.expect("drop test database");
}

#[tokio::test]
async fn a_unique_compound_index_rejects_a_duplicate() {
    let client = require_mongodb().await;
    let database = client.database(&unique_name("smoke"));
    let prices = database.collection::<Document>("prices");
    let index = IndexModel::builder()
        .keys(doc! { "symbol": 1, "ts": -1 })
        .options(IndexOptions::builder().unique(true).build())
        .build();
    // Creating the same index again is a no-op, as start-up code will rely on.
    prices
        .create_index(index.clone())
        .await
        .expect("create index");
    prices
        .create_index(index)
        .await
        .expect("create the same index again");

    let ts = DateTime::from_millis(1_732_390_000_123);
    prices
        .insert_one(doc! { "symbol": "ETHUSDT", "ts": ts, "price": 3_400.5 })
        .await
        .expect("first insert");
    let error = prices
        .insert_one(doc! { "symbol": "ETHUSDT", "ts": ts, "price": 3_401.0 })
        .await
        .expect_err("same symbol and ts must be rejected");
    match *error.kind {
        ErrorKind::Write(WriteFailure::WriteError(ref e)) => assert_eq!(e.code, DUPLICATE_KEY),
        _ => panic!("expected a duplicate-key write error, got {error}"),
    }
    // Another ts for the same symbol is fine.
    prices
        .insert_one(doc! { "symbol": "ETHUSDT", "ts": DateTime::from_millis(1), "price": 1.0 })
        .await
        .expect("different ts");
    assert_eq!(prices.count_documents(doc! {}).await.expect("count"), 2);

    database.drop().await.expect("drop test database");
}
