package config_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wsgateway/wsgateway/internal/config"
)

// An HS256 secret of fewer than 32 bytes (SHA-256's output size) is refused outside --dev:
// anyone holding one token can guess a short secret offline and then sign tokens for any
// user. The refusal never prints the secret. --dev accepts any secret, for quick tries.
func TestJWTSecretLength(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--jwt-secret=" + secret32, "--api-keys=k"}, true},
		{[]string{"--jwt-secret=" + secret32 + "more", "--api-keys=k"}, true},
		{[]string{"--jwt-secret=" + secret32[:31], "--api-keys=k"}, false},
		{[]string{"--jwt-secret=x", "--api-keys=k"}, false},
		{[]string{"--jwt-secret=x", "--dev"}, true},
		{[]string{"--jwt-secret=" + secret32[:31], "--dev", "--api-keys=k"}, true},
	} {
		_, err := config.Parse(tc.args, nil, new(bytes.Buffer))
		if (err == nil) != tc.ok {
			t.Errorf("Parse(%q): %v, want accepted %v", tc.args, err, tc.ok)
			continue
		}
		if err == nil {
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "jwt-secret") || !strings.Contains(msg, "32") {
			t.Errorf("Parse(%q): %q, want the setting and the 32-byte minimum named", tc.args, msg)
		}
		if secret := strings.TrimPrefix(tc.args[0], "--jwt-secret="); len(secret) > 3 && strings.Contains(err.Error(), secret) {
			t.Errorf("Parse(%q): the error shows the secret: %v", tc.args, err)
		}
	}
	c := config.Default()
	c.JWTSecret, c.APIKeys = "short", []string{"k"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "jwt-secret") {
		t.Errorf("Validate with a 5-byte secret: %v, want jwt-secret refused", err)
	}
}
