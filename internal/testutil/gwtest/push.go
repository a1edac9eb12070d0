package gwtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// PushResult is one user's entry in the answer of POST /api/v1/push (docs/protocol.md).
type PushResult struct {
	UserID    string `json:"user_id"`
	Seq       int64  `json:"seq"`
	Online    bool   `json:"online"`
	Queued    bool   `json:"queued"`
	Duplicate bool   `json:"duplicate"`
	Error     string `json:"error"`
}

// Push sends data (raw JSON) to user through the API at base ("http://host:port") with c,
// under push id id unless it is empty. It returns the HTTP status and, when that is 200, the
// user's result; an answer of 200 that is not one result is an error. It never fails a test,
// so it is safe from any goroutine; the caller decides what a failure means.
func Push(c *http.Client, base, user, id, data string) (int, PushResult, error) {
	body := `{"user_id":` + jsonString(user) + `,"data":` + data
	if id != "" {
		body += `,"id":` + jsonString(id)
	}
	resp, err := c.Post(base+"/api/v1/push", "application/json", strings.NewReader(body+"}"))
	if err != nil {
		return 0, PushResult{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp.StatusCode, PushResult{}, err
	}
	var out struct {
		Results []PushResult `json:"results"`
	}
	if err := json.Unmarshal(b, &out); err != nil || len(out.Results) != 1 {
		return resp.StatusCode, PushResult{}, fmt.Errorf("push answer %s: %v", b, err)
	}
	return resp.StatusCode, out.Results[0], nil
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
