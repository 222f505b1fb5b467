package tokenservice

import _ "embed"

// openAPIDocument describes the API; the service serves it at
// /v1/openapi.yaml.
//
//go:embed openapi.yaml
var openAPIDocument []byte

// OpenAPI returns the OpenAPI 3.1 document of the API.
func OpenAPI() []byte { return append([]byte(nil), openAPIDocument...) }
