package store

import (
	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
)

// InstrumentRedis makes every command of c an OpenTelemetry client span
// (github.com/redis/go-redis/extra/redisotel): named by the command only
// ("hmget", "evalsha", "redis.pipeline zadd zrem"), with db.system=redis and
// the server's address and port. Never the arguments: keys carry principal
// names and values carry orders, so db.statement is off; AUTH and HELLO
// with credentials are not traced at all. tp nil uses the global provider.
//
// Call it once, on the client the store and the rate limiter share. Added
// after NewGuard, a span covers what reached Redis (a command the open
// breaker refuses makes none); added before, it covers the guard too.
func InstrumentRedis(c redis.UniversalClient, tp trace.TracerProvider) error {
	opts := []redisotel.TracingOption{
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
	}
	if tp != nil {
		opts = append(opts, redisotel.WithTracerProvider(tp))
	}
	return redisotel.InstrumentTracing(c, opts...)
}
