package server

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/wsgateway/wsgateway/internal/api"
	"github.com/wsgateway/wsgateway/internal/auth"
	"github.com/wsgateway/wsgateway/internal/web"
	"github.com/wsgateway/wsgateway/internal/ws"
)

func (s *Server) routes(verifier *auth.Verifier) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.CustomRecoveryWithWriter(nil, func(c *gin.Context, err any) {
		s.log.Error("panic in handler", "path", c.FullPath(), "err", err)
		c.AbortWithStatusJSON(http.StatusInternalServerError, gin.H{"error": "internal error"})
	}))
	r.HandleMethodNotAllowed = true
	r.NoRoute(func(c *gin.Context) { c.JSON(http.StatusNotFound, gin.H{"error": "not found"}) })
	r.NoMethod(func(c *gin.Context) { c.JSON(http.StatusMethodNotAllowed, gin.H{"error": "method not allowed"}) })

	wsh := ws.NewHandler(s.hub, clientAuth{dev: s.cfg.Dev, verifier: verifier})
	r.GET("/ws", gin.WrapH(wsh))
	if s.cfg.Dev {
		r.GET("/ws/echo", gin.WrapF(wsh.Echo))
	}
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.readyz)
	r.GET("/metrics", gin.WrapH(s.metrics.Handler()))

	var checkKey func(string) bool
	if !s.cfg.Dev || len(s.cfg.APIKeys) > 0 {
		checkKey = auth.NewAPIKeys(s.cfg.APIKeys).CheckHeader
	}
	api.Register(r, api.Options{
		Pusher: apiPusher{s.store}, Bus: s.bus, Presence: s.apiPresence(), CheckKey: checkKey, ValidUser: auth.ValidUserID, Observer: s.metrics,
	})
	if s.cfg.ServeDemo() {
		page := gin.WrapH(web.Handler())
		r.GET("/", page)
		r.GET("/static/*path", func(c *gin.Context) {
			c.Request.URL.Path = c.Param("path")
			page(c)
		})
	}
	return r
}

func (s *Server) readyz(c *gin.Context) {
	if s.hub.Draining() {
		c.JSON(http.StatusServiceUnavailable, gin.H{"error": "draining", "node_id": s.cfg.NodeID})
		return
	}
	if err := s.bus.Ready(); err != nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"error": err.Error(), "node_id": s.cfg.NodeID})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready", "node_id": s.cfg.NodeID})
}
