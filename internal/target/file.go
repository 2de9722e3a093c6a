package target

import (
	"cmp"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Problems is the error of a targets file that cannot be used: every
// problem found, one line each, in the order of the file.
type Problems []string

func (p Problems) Error() string { return strings.Join(p, "\n") }

// ReadFile reads and decodes the targets file at path (see Decode).
func ReadFile(path string) ([]Target, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Problems{fmt.Sprintf("%s: %v", path, err)}
	}
	return Decode(path, data)
}

// The keys a target takes in a file, and those of its cluster and when.
var (
	targetKeys = []Key{KeyName, KeyImage, KeyWhen, KeyCluster, KeyNamespace, KeyDeployment, KeyContainer,
		KeyStrategy, KeyService, KeyIngress, KeyRolloutTimeout, KeyScaleDownOld, KeyScaleDownDelay, KeyGates, KeyGateTimeout,
		KeyCanarySteps, KeyCanaryPause, KeyHTTPRoute}
	clusterKeys = []Key{KeyProject, KeyLocation, KeyClusterName, KeyKubeconfig, KeyEndpoint}
)

// Decode decodes a targets file (file names it in messages):
//
//	targets:
//	  - name: web-staging
//	    image: us-docker.pkg.dev/acme/apps/web
//	    when: {branch: main}
//	    cluster: {project: acme, location: us-central1, name: staging}
//	    deployment: web
//	    container: web
//
// Decoding is strict: an unknown or repeated key, a value of the wrong type,
// an invalid rule, a repeated target name, and every problem Build finds is
// reported. The error is then Problems, each one
// FILE:LINE: target NAME: KEY: problem.
func Decode(file string, data []byte) ([]Target, error) {
	d := decoder{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, Problems{d.syntax(err)}
	}
	targets := d.document(&doc)
	if len(d.problems) > 0 {
		slices.SortStableFunc(d.problems, func(a, b located) int { return cmp.Compare(a.line, b.line) })
		var out Problems
		for _, p := range d.problems {
			out = append(out, p.text)
		}
		return nil, out
	}
	return targets, nil
}

// located is one problem and the line it is on.
type located struct {
	line int
	text string
}

type decoder struct {
	file     string
	problems []located
}

// bad adds a problem at line; the text follows FILE:LINE: .
func (d *decoder) bad(line int, format string, args ...any) {
	d.problems = append(d.problems, located{line, fmt.Sprintf("%s:%d: ", d.file, line) + fmt.Sprintf(format, args...)})
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// syntax renders a YAML syntax error as FILE:LINE: problem.
func (d *decoder) syntax(err error) string {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s:%s: %s", d.file, m[1], msg[len(m[0]):])
	}
	return fmt.Sprintf("%s: %s", d.file, strings.TrimPrefix(msg, "yaml: "))
}

func (d *decoder) document(doc *yaml.Node) []Target {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		d.bad(1, "the file is empty: want a mapping with the key targets")
		return nil
	}
	root := resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		d.bad(root.Line, "want a mapping with the key targets, got %s", kind(root))
		return nil
	}
	var list *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], resolve(root.Content[i+1])
		switch {
		case k.Value != "targets":
			d.bad(k.Line, "%s: unknown key (want targets)", k.Value)
		case list != nil:
			d.bad(k.Line, "targets: also set at line %d", list.Line)
		default:
			list = v
		}
	}
	switch {
	case list == nil:
		d.bad(root.Line, "targets: is required")
		return nil
	case list.Kind != yaml.SequenceNode:
		d.bad(list.Line, "targets: want a list of targets, got %s", kind(list))
		return nil
	case len(list.Content) == 0:
		d.bad(list.Line, "targets: is empty: list at least one target")
		return nil
	}

	var targets []Target
	names := map[string]int{}
	for i, item := range list.Content {
		t, ok := d.target(i+1, resolve(item), names)
		if ok {
			targets = append(targets, t)
		}
	}
	return targets
}

// target decodes the n-th target (from 1); names maps the names seen so far
// to their lines.
func (d *decoder) target(n int, node *yaml.Node, names map[string]int) (Target, bool) {
	label := fmt.Sprintf("#%d", n)
	if node.Kind != yaml.MappingNode {
		d.bad(node.Line, "target %s: want a mapping, got %s", label, kind(node))
		return Target{}, false
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		if v := resolve(node.Content[i+1]); node.Content[i].Value == string(KeyName) && v.Kind == yaml.ScalarNode && v.Tag == "!!str" && v.Value != "" {
			label = v.Value
			break
		}
	}
	before := len(d.problems)
	bad := func(line int, k Key, format string, args ...any) {
		d.bad(line, "target %s: %s: %s", label, k, fmt.Sprintf(format, args...))
	}

	s := Settings{Line: node.Line, Values: map[Key]Value{}}
	seen := map[Key]int{}
	var rules []Rule
	var fields func(prefix string, node *yaml.Node, allowed []Key)
	fields = func(prefix string, node *yaml.Node, allowed []Key) {
		for i := 0; i+1 < len(node.Content); i += 2 {
			kn, v := node.Content[i], resolve(node.Content[i+1])
			k := Key(prefix + kn.Value)
			if at, ok := seen[k]; ok {
				bad(kn.Line, k, "also set at line %d", at)
				continue
			}
			seen[k] = kn.Line
			switch {
			case prefix == "when.":
				if !d.str(bad, k, v) {
					continue
				}
				r, err := ParseRule(RuleKey(kn.Value), v.Value)
				if err != nil {
					bad(kn.Line, k, "%v", err)
					continue
				}
				rules = append(rules, r)
			case !slices.Contains(allowed, k):
				bad(kn.Line, k, "unknown key (want %s)", keyList(prefix, allowed))
			case k == KeyCluster || k == KeyWhen:
				if v.Kind != yaml.MappingNode {
					bad(v.Line, k, "want a mapping, got %s", kind(v))
					s.Values[k] = Value{Line: v.Line, Invalid: true}
					continue
				}
				allowed := clusterKeys
				if k == KeyCluster {
					s.Values[k] = Value{Line: kn.Line}
				} else {
					allowed = nil // Rules are checked by ParseRule.
				}
				fields(string(k)+".", v, allowed)
			case k == KeyGates:
				if text, ok := d.strs(bad, k, v); ok {
					s.Values[k] = Value{Text: text, Line: v.Line}
				} else {
					s.Values[k] = Value{Line: v.Line, Invalid: true}
				}
			case k == KeyScaleDownOld:
				if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
					bad(v.Line, k, "%s, want a boolean (true or false)", describe(v))
					s.Values[k] = Value{Line: v.Line, Invalid: true}
					continue
				}
				s.Values[k] = Value{Text: v.Value, Line: v.Line}
			default:
				if d.str(bad, k, v) {
					s.Values[k] = Value{Text: strings.TrimSpace(v.Value), Line: v.Line}
				} else {
					s.Values[k] = Value{Line: v.Line, Invalid: true}
				}
			}
		}
	}
	fields("", node, targetKeys)
	s.When = NewRules(rules...)

	name := s.Values[KeyName]
	s.Name = name.Text
	switch {
	case name.Text == "":
		if _, set := seen[KeyName]; !set {
			bad(node.Line, KeyName, "is required (a DNS label, unique in the file)")
		}
	case len(validation.IsDNS1123Label(name.Text)) > 0:
		bad(name.Line, KeyName, "%q: %s", name.Text, strings.Join(validation.IsDNS1123Label(name.Text), "; "))
	case names[name.Text] > 0:
		bad(name.Line, KeyName, "%q is also the name of the target at line %d", name.Text, names[name.Text])
	default:
		names[name.Text] = node.Line
	}

	c := func(k Key) Value { return s.Values[k] }
	if c(KeyKubeconfig).Text != "" {
		if c(KeyClusterName).Text != "" {
			bad(c(KeyKubeconfig).Line, KeyKubeconfig, "and cluster.name are both set: give a GKE cluster or a kubeconfig")
		} else {
			for _, k := range []Key{KeyProject, KeyLocation} {
				if c(k).Text != "" {
					bad(c(k).Line, k, "is used only with cluster.name (a GKE cluster), not with cluster.kubeconfig")
				}
			}
		}
	}

	t, problems := Build(s)
	for _, p := range problems {
		d.problems = append(d.problems, located{p.Line, p.InFile(d.file, label)})
	}
	return t, len(d.problems) == before
}

// str reports whether v is a string, naming the problem when it is not.
func (d *decoder) str(bad func(int, Key, string, ...any), k Key, v *yaml.Node) bool {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!str" && strings.TrimSpace(v.Value) != "" {
		return true
	}
	if v.Kind == yaml.ScalarNode && (v.Tag == "!!null" || v.Tag == "!!str") {
		bad(v.Line, k, "is empty: give a value or leave the key out")
		return false
	}
	hint := ""
	if v.Kind == yaml.ScalarNode {
		hint = " (quote it)"
	}
	bad(v.Line, k, "%s, want a string%s", describe(v), hint)
	return false
}

// strs reads v, a list of strings, as one comma-separated value (as the
// variable carries it), naming the problem when it is not such a list.
func (d *decoder) strs(bad func(int, Key, string, ...any), k Key, v *yaml.Node) (string, bool) {
	if v.Kind != yaml.SequenceNode {
		bad(v.Line, k, "%s, want a list of strings", describe(v))
		return "", false
	}
	if len(v.Content) == 0 {
		bad(v.Line, k, "is empty: list at least one name or leave the key out")
		return "", false
	}
	var items []string
	for _, item := range v.Content {
		item = resolve(item)
		if !d.str(bad, k, item) {
			return "", false
		}
		if strings.Contains(item.Value, ",") {
			bad(item.Line, k, "%q: a name has no comma", item.Value)
			return "", false
		}
		items = append(items, strings.TrimSpace(item.Value))
	}
	return strings.Join(items, ","), true
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// kind names what a node holds: a mapping, a list, a string, a number...
func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.Tag {
	case "!!str":
		return "a string"
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	case "!!null":
		return "nothing"
	}
	return n.Tag
}

// describe is a node as a problem's subject: its value when a scalar, else
// its kind.
func describe(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return fmt.Sprintf("%s is %s", strconv.Quote(n.Value), kind(n))
	}
	return "is " + kind(n)
}

// keyList lists the keys allowed under prefix, without the prefix.
func keyList(prefix string, keys []Key) string {
	var names []string
	for _, k := range keys {
		names = append(names, strings.TrimPrefix(string(k), prefix))
	}
	return strings.Join(names, ", ")
}
