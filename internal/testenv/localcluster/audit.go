package localcluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Request is one request the apiserver received from a user of
// Options.Tokens, as its audit log records it.
type Request struct {
	Verb, Resource, Subresource, Namespace, Name string
	// ID is the apiserver's audit ID of the request.
	ID string
	// At is when the apiserver received it.
	At time.Time
}

// String reads as "get deployments default/web" or "patch deployments/status
// default/web".
func (r Request) String() string {
	res := r.Resource
	if r.Subresource != "" {
		res += "/" + r.Subresource
	}
	return r.Verb + " " + res + " " + r.Namespace + "/" + r.Name
}

// auditFiles writes the audit policy into dir and returns the apiserver
// flags that record every request of users, and only theirs, at the
// Metadata level, when received. blocking-strict writes each event before
// the request is served, so a request is in the log before its answer
// reaches the client.
func auditFiles(dir string, users []string) ([]string, error) {
	slices.Sort(users)
	quoted := make([]string, len(users))
	for i, u := range users {
		quoted[i] = fmt.Sprintf("%q", u)
	}
	policy := "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseStarted, ResponseComplete]\nrules:\n"
	if len(users) > 0 {
		policy += "- level: Metadata\n  users: [" + strings.Join(quoted, ", ") + "]\n"
	}
	policy += "- level: None\n"
	path := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		return nil, fmt.Errorf("writing the audit policy: %w", err)
	}
	return []string{
		"--audit-policy-file=" + path,
		"--audit-log-path=" + filepath.Join(dir, "audit.log"),
		"--audit-log-format=json",
		"--audit-log-mode=blocking-strict",
	}, nil
}

// Requests returns, in the order received, every request the apiserver has
// received from user, one of Options.Tokens' users. A request the user's
// client has had an answer to is always among them.
func (c *Cluster) Requests(user string) ([]Request, error) {
	f, err := os.Open(filepath.Join(c.Dir, "audit.log"))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var reqs []Request
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev struct {
			Stage string `json:"stage"`
			ID    string `json:"auditID"`
			User  struct {
				Username string `json:"username"`
			} `json:"user"`
			Verb      string `json:"verb"`
			ObjectRef struct {
				Resource, Subresource, Namespace, Name string
			} `json:"objectRef"`
			Received time.Time `json:"requestReceivedTimestamp"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			// The last line may be half written while a request comes in.
			continue
		}
		if ev.Stage != "RequestReceived" || ev.User.Username != user {
			continue
		}
		r := ev.ObjectRef
		reqs = append(reqs, Request{Verb: ev.Verb, Resource: r.Resource, Subresource: r.Subresource, Namespace: r.Namespace, Name: r.Name, ID: ev.ID, At: ev.Received})
	}
	return reqs, sc.Err()
}
