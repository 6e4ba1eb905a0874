//! The testkit contract suite against the in-memory GCS control plane.

use super::common::harness;

mvo_testkit::contract_suite!(harness());
