//! Secret memory: slot alloc/write/read/free, and making the sealed memfd a Read sends.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use agentkeysd::vault::{SecretMemoryPolicy, Vault, sealed_memfd_from_secret};
use criterion::{Criterion, criterion_group, criterion_main};

fn vault(c: &mut Criterion) {
    for (label, policy) in [
        ("memfd_secret", SecretMemoryPolicy::Require),
        ("mlock", SecretMemoryPolicy::Mlock),
    ] {
        let v = Vault::new(policy).unwrap();
        for len in [64usize, 4096] {
            c.bench_function(
                &format!("vault/{label}/alloc+write+read+free/{len}B"),
                |b| {
                    b.iter(|| {
                        let mut s = v.alloc(len).unwrap();
                        s.expose_secret_mut().fill(0x5a);
                        black_box(s.expose_secret()[len - 1]);
                    })
                },
            );
        }
        let mut s = v.alloc(64).unwrap();
        s.expose_secret_mut().fill(0x5a);
        c.bench_function(
            &format!("vault/{label}/sealed-memfd-from-secret/64B"),
            |b| b.iter(|| black_box(sealed_memfd_from_secret(&s).unwrap())),
        );
    }
}

criterion_group!(benches, vault);
criterion_main!(benches);
