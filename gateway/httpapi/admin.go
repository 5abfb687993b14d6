package httpapi

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/labstack/echo/v4"

	"morag-gpu/auth"
)

// requireAdmin lets through requests that auth.Middleware found carrying
// the admin token ("Authorization: Bearer <token>" or "X-Admin-Token");
// the comparison and the counting of wrong tokens happen there.
func (g *Gateway) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !g.guard.AdminEnabled() {
			return detail(c, http.StatusForbidden, "Key management is disabled: start the gateway with -admin-token-file or MORAG_ADMIN_TOKEN")
		}
		if !auth.IsAdmin(c) {
			return detail(c, http.StatusForbidden, "Admin token required (Authorization: Bearer <admin token> or X-Admin-Token)")
		}
		return next(c)
	}
}

// readSecretFile reads a secret from the first line of a file. A file
// others can read is refused: the point of a file is that only the
// gateway's user can read it.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is readable by group or others (mode %v); run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("%s is empty; write the token on its first line", path)
	}
	tok := strings.TrimSpace(line)
	if tok == "" {
		return "", errors.New(path + " holds no token on its first line")
	}
	return tok, nil
}
