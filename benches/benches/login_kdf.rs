//! The Argon2id stretch every `pam_agentkeys` login costs the daemon (pam/README.md
//! reports it): the shipped parameters (`LOGIN_KDF`), one derivation per iteration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agentkeysd::store::login::{WrapSpec, stretch};
use agentkeysd::vault::{SecretMemoryPolicy, Vault};
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let vault = Vault::new(SecretMemoryPolicy::Prefer).unwrap();
    let mut password = vault.alloc(20).unwrap();
    password
        .expose_secret_mut()
        .copy_from_slice(b"correct horse batter");
    let spec = WrapSpec::fresh().unwrap();
    let mut group = c.benchmark_group("login");
    group.sample_size(10);
    group.bench_function(
        format!(
            "argon2id stretch (m={} KiB, t={}, p={})",
            spec.params.m_cost_kib, spec.params.t_cost, spec.params.p_cost
        ),
        |b| b.iter(|| stretch(&vault, &spec, &password).unwrap()),
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
