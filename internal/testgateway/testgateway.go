// Package testgateway runs the HTTP gateway in a test, for the packages
// that test against it from outside (remote workers, real networks). It
// is apart from internal/testenv because the gateway's own tests import
// testenv.
package testgateway

import (
	"context"
	"net/http/httptest"
	"testing"

	"morag-gpu/gateway/httpapi"
)

// Unstarted returns a test server with its listener open and its URL
// ("http://127.0.0.1:port"), so that a Config can name it (PublicURL)
// before Start.
func Unstarted() (*httptest.Server, string) {
	srv := httptest.NewUnstartedServer(nil)
	return srv, "http://" + srv.Listener.Addr().String()
}

// Start builds the gateway from cfg, serves it on srv (from Unstarted)
// and stops both when the test ends: client connections first, so that
// long polls do not hold the shutdown.
func Start(t testing.TB, srv *httptest.Server, cfg httpapi.Config) *httpapi.Gateway {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g, err := httpapi.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srv.Config.Handler = g.Handler()
	srv.Start()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		g.Wait()
	})
	return g
}
