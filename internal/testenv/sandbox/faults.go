package sandbox

import (
	"errors"

	"github.com/onnewimage/onnewimage/internal/testenv/faultproxy"
)

// startProxy starts the fault proxy in front of the apiserver, presenting
// the apiserver's own certificate: the function verifies it against the
// cluster CA that GetCluster answers, as it verifies the apiserver.
func (s *Sandbox) startProxy() error {
	cert, err := s.Cluster.ServingCertificate()
	if err != nil {
		return err
	}
	if s.Proxy, err = faultproxy.Start(faultproxy.Options{Upstream: s.Cluster.Host, UpstreamCA: s.Cluster.CAData, Certificate: cert}); err != nil {
		return err
	}
	s.logf("sandbox: fault proxy on %s in front of the apiserver", s.Proxy.Addr)
	return nil
}

// RevokeToken makes the cluster refuse the token the token service handed
// the function so far, as GKE refuses a token that expired or was revoked
// before the expiry it was issued with (the fault proxy answers 401), and
// makes the token service hand out another one from now on, which the
// cluster accepts. It needs Options.FaultProxy, and works once.
func (s *Sandbox) RevokeToken() error {
	if s.Proxy == nil {
		return errors.New("revoking the function's token: the sandbox runs without Options.FaultProxy")
	}
	if s.spareToken == "" {
		return errors.New("revoking the function's token: already revoked once")
	}
	s.Proxy.Revoke(s.token)
	s.Tokens.SetAccessToken(ServiceAccount, s.spareToken)
	s.spareToken = ""
	return nil
}
