//! The testkit contract suite, one test per case, against moto.

use super::common::harness;

mvo_testkit::contract_suite!(harness());
