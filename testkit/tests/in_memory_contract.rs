//! The in-memory provider passes the whole contract suite (a test binary with `harness = false`:
//! cases the provider does not claim are reported ignored with the reason).

use std::{process::ExitCode, sync::Arc};

use mvo_core::Platform;
use mvo_testkit::{Harness, InMemoryPlatform, contract::TagStyle};

async fn harness() -> Harness {
    let platform = InMemoryPlatform::new("eu-west-1");
    Harness {
        store: platform.object_store(&mvo_core::NO_SECTION).expect("object store"),
        capabilities: platform.capabilities(),
        region: platform.region().to_owned(),
        tag_style: TagStyle::Tags,
        kms_key: "arn:aws:kms:eu-west-1:000000000000:key/contract".into(),
        backdoor: Arc::new(platform),
    }
}

fn main() -> ExitCode {
    mvo_testkit::contract::main(harness)
}
