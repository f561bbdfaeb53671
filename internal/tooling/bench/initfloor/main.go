// Command initfloor answers /readyz with plain net/http, like
// bench/baseline, but links every library portfolio-mcp imports (blank
// imports run their package initialisation; TestInitFloorLinksOurLibraries
// keeps the list equal to the server's). Its exec-to-ready time and idle
// memory are the floor those libraries set, which the server cannot go
// below without dropping one: the bench harness reports it beside the
// other rows.
//
//	PORT=8091 initfloor
package main

import (
	"log"
	"net/http"
	"os"

	_ "filippo.io/edwards25519"
	_ "github.com/MicahParks/keyfunc/v3"
	_ "github.com/cenkalti/backoff/v5"
	_ "github.com/cloudevents/sdk-go/v2"
	_ "github.com/cloudevents/sdk-go/v2/protocol/http"
	_ "github.com/go-redis/redis_rate/v10"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/google/jsonschema-go/jsonschema"
	_ "github.com/google/uuid"
	_ "github.com/hashicorp/golang-lru/v2"
	_ "github.com/modelcontextprotocol/go-sdk/auth"
	_ "github.com/modelcontextprotocol/go-sdk/jsonrpc"
	_ "github.com/modelcontextprotocol/go-sdk/mcp"
	_ "github.com/modelcontextprotocol/go-sdk/oauthex"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/redis/go-redis/extra/redisotel/v9"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/rs/cors"
	_ "github.com/segmentio/encoding/json"
	_ "github.com/sethvargo/go-envconfig"
	_ "github.com/sony/gobreaker/v2"
	_ "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	_ "go.opentelemetry.io/otel"
	_ "go.opentelemetry.io/otel/attribute"
	_ "go.opentelemetry.io/otel/codes"
	_ "go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	_ "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	_ "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	_ "go.opentelemetry.io/otel/metric/noop"
	_ "go.opentelemetry.io/otel/propagation"
	_ "go.opentelemetry.io/otel/sdk/resource"
	_ "go.opentelemetry.io/otel/sdk/trace"
	_ "go.opentelemetry.io/otel/semconv/v1.37.0"
	_ "go.opentelemetry.io/otel/semconv/v1.43.0"
	_ "go.opentelemetry.io/otel/trace"
	_ "go.opentelemetry.io/otel/trace/noop"
	_ "golang.org/x/oauth2"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/time/rate"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8091"
	}
	http.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"status":"ready"}`)) })
	log.Fatal(http.ListenAndServe("127.0.0.1:"+port, nil))
}
