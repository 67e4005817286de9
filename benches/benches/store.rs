//! The store: a durable write (store, fsync) and a read (open + audit row, no fsync).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use agentkeysd::store::{Actor, PutOptions, Store};
use agentkeysd::vault::{SecretMemoryPolicy, Vault};
use criterion::{Criterion, criterion_group, criterion_main};

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
    let mut store = Store::open(&dir.path().join("state"), None, &vault).unwrap();
    let actor = Actor {
        uid: 1000,
        pid: Some(1),
    };
    let mut secret = vault.alloc(40).unwrap();
    secret.expose_secret_mut().fill(b'k');
    let opts = PutOptions {
        env_var: "OPENAI_API_KEY".into(),
        expires_at: None,
        replace: true,
        class: None,
    };
    store
        .put_credential(&actor, 1000, "openai", &secret, &opts)
        .unwrap();
    c.bench_function("store/put (replace, synchronous=FULL)", |b| {
        b.iter(|| {
            black_box(
                store
                    .put_credential(&actor, 1000, "openai", &secret, &opts)
                    .unwrap(),
            )
        })
    });
    c.bench_function("store/read (open + audit row)", |b| {
        b.iter(|| black_box(store.read_credential(&actor, 1000, "openai").unwrap()))
    });
}

criterion_group!(benches, store);
criterion_main!(benches);
