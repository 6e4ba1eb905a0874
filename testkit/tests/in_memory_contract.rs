//! The in-memory provider passes the whole contract suite.

use std::sync::Arc;

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

mvo_testkit::contract_suite!(harness());
