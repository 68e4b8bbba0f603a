package main

import (
	"reflect"
	"testing"
)

// The shapes the operator's default policy renders (keys sorted, a
// sequence at its parent key's indentation, {} and [], quoted scalars).
const rendered = `adapters:
  nfs:
    enabled: true
    port: 2049 # the NFS port
content:
  global: {}
  stores:
    local-content:
      filesystem:
        path: /data/content
      type: filesystem
server:
  metrics:
    enabled: true
    port: 9090
shares:
- allowed_auth_methods:
  - anonymous
  - unix
  allowed_clients: []
  name: /export
  quoted: "a: #b"
  single: 'it''s'
- name: /other
  list: [a, "b c"]
`

func TestParseRendered(t *testing.T) {
	got, err := parseYAML(rendered)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"adapters": map[string]any{"nfs": map[string]any{"enabled": "true", "port": "2049"}},
		"content": map[string]any{
			"global": map[string]any{},
			"stores": map[string]any{"local-content": map[string]any{
				"filesystem": map[string]any{"path": "/data/content"}, "type": "filesystem"}},
		},
		"server": map[string]any{"metrics": map[string]any{"enabled": "true", "port": "9090"}},
		"shares": []any{
			map[string]any{
				"allowed_auth_methods": []any{"anonymous", "unix"},
				"allowed_clients":      []any{},
				"name":                 "/export",
				"quoted":               "a: #b",
				"single":               "it's",
			},
			map[string]any{"name": "/other", "list": []any{"a", "b c"}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v", got)
	}
	if dirs := storeDirs(got); !reflect.DeepEqual(dirs, []string{"/data/content"}) {
		t.Fatalf("storeDirs: %v", dirs)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, bad := range []string{
		"a: [1, [2]]", "a: &x 1", "a:\n  b: 1\n c: 2", "a: 1\na: 2",
		"a: |\n  x", "- a\nb: 1", "a: \"x", "a: 1\n---\nb: 2", "a:\n\t b: 1",
	} {
		if v, err := parseYAML(bad); err == nil {
			t.Errorf("%q parsed as %#v", bad, v)
		}
	}
}
