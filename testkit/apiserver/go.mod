module mvo-test-apiserver

go 1.25
