//! `AdminService`: what an operator asks first.

use testgrid_proto as pb;
use tonic::{Request, Response, Status};

use super::convert::worker_view_to_pb;
use super::engine::{Command, EngineHandle};

pub struct AdminSvc {
    pub engine: EngineHandle,
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminSvc {
    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let mut views = self.engine.ask(|reply| Command::Workers { reply }).await?;
        views.sort_by(|a, b| a.spec.name.cmp(&b.spec.name).then(a.id.cmp(&b.id)));
        Ok(Response::new(pb::ListWorkersResponse { workers: views.iter().map(worker_view_to_pb).collect() }))
    }
}
