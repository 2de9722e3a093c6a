package target

import (
	"fmt"
	"regexp"
	"strings"

	"cloud.google.com/go/cloudbuild/apiv1/v2/cloudbuildpb"
)

// A RuleKey names what of a build a rule is matched against.
type RuleKey string

// The keys of a target's when rules, in the order they are checked.
const (
	// Branch is matched against BRANCH_NAME (or source.repoSource.branchName).
	Branch RuleKey = "branch"
	// Tag is matched against TAG_NAME (or source.repoSource.tagName).
	Tag RuleKey = "tag"
	// Trigger is matched against TRIGGER_NAME.
	Trigger RuleKey = "trigger"
	// Repo is matched against REPO_NAME (or source.repoSource.repoName).
	Repo RuleKey = "repo"
)

// ruleKeys are the keys in the order rules are checked and printed.
var ruleKeys = []RuleKey{Branch, Tag, Trigger, Repo}

// substitution is the build substitution a key is matched against.
func (k RuleKey) substitution() string {
	return map[RuleKey]string{Branch: "BRANCH_NAME", Tag: "TAG_NAME", Trigger: "TRIGGER_NAME", Repo: "REPO_NAME"}[k]
}

// value is the build's value for k: its substitution, else the build's
// source.repoSource field; "" when the build has none.
func (k RuleKey) value(b *cloudbuildpb.Build) string {
	if v := b.GetSubstitutions()[k.substitution()]; v != "" {
		return v
	}
	rs := b.GetSource().GetRepoSource()
	switch k {
	case Branch:
		return rs.GetBranchName()
	case Tag:
		return rs.GetTagName()
	case Repo:
		return rs.GetRepoName()
	}
	return ""
}

// Value is the build's value for k: its substitution (BRANCH_NAME,
// TAG_NAME, TRIGGER_NAME, REPO_NAME), else the build's source.repoSource
// field; "" when the build has none.
func (k RuleKey) Value(b *cloudbuildpb.Build) string { return k.value(b) }

// Rule is one when rule: an RE2 expression matched against the whole of one
// build value.
type Rule struct {
	Key RuleKey
	// Expr is the expression as written, without the implicit anchors.
	Expr string
	re   *regexp.Regexp
}

// Rules are a target's when rules. Every rule must match a build for the
// target to deploy it; no rules match every build.
type Rules struct {
	rules []Rule
}

// ParseRule compiles expr as the rule on key, anchored at both ends: "main"
// matches the branch main only, not "maintenance".
func ParseRule(key RuleKey, expr string) (Rule, error) {
	if key.substitution() == "" {
		return Rule{}, fmt.Errorf("unknown rule %q (want branch, tag, trigger or repo)", key)
	}
	if _, err := regexp.Compile(expr); err != nil {
		return Rule{}, fmt.Errorf("%q is not an RE2 regular expression: %v", expr, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	re := regexp.MustCompile(`^(?:` + expr + `)$`)
	return Rule{Key: key, Expr: expr, re: re}, nil
}

// NewRules returns the rules given, checked in the order branch, tag,
// trigger, repo. A key given twice keeps its last rule.
func NewRules(rules ...Rule) Rules {
	var r Rules
	for _, k := range ruleKeys {
		for i := len(rules) - 1; i >= 0; i-- {
			if rules[i].Key == k {
				r.rules = append(r.rules, rules[i])
				break
			}
		}
	}
	return r
}

// List returns the rules, in the order they are checked.
func (r Rules) List() []Rule { return append([]Rule(nil), r.rules...) }

// Match reports whether b satisfies every rule. When it does not, why names
// the first rule that failed and the build's value.
func (r Rules) Match(b *cloudbuildpb.Build) (ok bool, why string) {
	for _, rule := range r.rules {
		v := rule.Key.value(b)
		if v == "" {
			return false, fmt.Sprintf("when.%s %q: the build has no %s", rule.Key, rule.Expr, rule.Key.substitution())
		}
		if !rule.re.MatchString(v) {
			return false, fmt.Sprintf("when.%s %q does not match %s %q", rule.Key, rule.Expr, rule.Key.substitution(), v)
		}
	}
	return true, ""
}

// String lists the rules as key=expr, comma-separated; "*" when there are
// none (every build matches).
func (r Rules) String() string {
	if len(r.rules) == 0 {
		return "*"
	}
	var parts []string
	for _, rule := range r.rules {
		parts = append(parts, string(rule.Key)+"="+rule.Expr)
	}
	return strings.Join(parts, ",")
}
