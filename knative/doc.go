// Package knative holds the deployable manifests of portfolio-mcp (the
// *.yaml files of this folder, applied with `ko apply -f knative/`) and the
// tests that validate them with the real code of the systems that will read
// them: knative.dev/serving's defaulting, validation and revision
// reconciler for the Services, knative.dev/eventing's types and validation
// for the Broker, SinkBinding and Trigger, Kubernetes' own types for core
// objects, the Pod Security Admission library for the pods Knative makes,
// and the External Secrets CRD schemas, checked by the API server's
// structural-schema validation code, for the SecretStore and ExternalSecret.
//
// The package has no code of its own: it exists so that `go test
// ./knative/...` runs those tests.
package knative
