//! The testkit contract suite, one test per case, against Azurite.

use super::common::harness;

mvo_testkit::contract_suite!(harness());
