//! AES-256-GCM seal/open exactly as the store does it: plaintext only in secret memory.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use agentkeysd::store::seal::{KEY_LEN, open, seal};
use agentkeysd::vault::{SecretMemoryPolicy, Vault};
use criterion::{Criterion, criterion_group, criterion_main};

fn seal_open(c: &mut Criterion) {
    let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
    let mut key = vault.alloc(KEY_LEN).unwrap();
    key.expose_secret_mut().fill(0x42);
    let aad = b"owner|id|version|name";
    for len in [48usize, 4096] {
        let plaintext = vec![b'k'; len];
        c.bench_function(&format!("seal/{len}B"), |b| {
            b.iter(|| black_box(seal(&vault, &key, &plaintext, aad).unwrap()))
        });
        let sealed = seal(&vault, &key, &plaintext, aad).unwrap();
        c.bench_function(&format!("open/{len}B"), |b| {
            b.iter(|| {
                black_box(
                    open(&vault, &key, &sealed.nonce, &sealed.sealed, aad)
                        .unwrap()
                        .unwrap(),
                )
            })
        });
    }
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
