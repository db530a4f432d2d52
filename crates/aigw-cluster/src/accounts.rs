//! Calling the account-manager group from a node that does not hold it.

use aigw_placement::METADATA_GROUP;
use aigw_proto::BoxStream;
use aigw_proto::admin::accounts_client::AccountsClient as AccountsGrpcClient;
use aigw_proto::admin::accounts_server::Accounts;
use aigw_proto::admin::cluster_client::ClusterClient;
use aigw_proto::admin::cluster_server::Cluster;
use aigw_proto::admin::gateways_client::GatewaysClient;
use aigw_proto::admin::gateways_server::Gateways;
use aigw_proto::admin::{
    Account, AccountInfo, AccountRef, CreateAccountRequest, CreateGatewayRequest,
    CreateTokenRequest, CreatedToken, Gateway, GatewayChanges, GatewayRef, GatewayUsageResponse,
    GetShardMapRequest, ListGatewaysRequest, ListGatewaysResponse, ListPlansRequest,
    ListPlansResponse, ListTokensResponse, Plan, PutShardMapRequest, Quota, SetAccountPlanRequest,
    ShardMapVersion, TokenInfo, TokenRef, UpdateGatewayRequest, UsageReport, WatchGatewaysRequest,
    WatchShardMapRequest,
};
use tonic::{Request, Response, Status};

use crate::{Caller, Credentials, RetryPolicy};

/// `aigw.admin.v1.Gateways`, `Accounts` and `Cluster` of the account-manager group, called on its leader
/// (found from `seeds`, its replicas' addresses, and then from their replies) with the
/// router's retries. Edges serve the management API through it.
pub struct AccountsClient {
    seeds: Vec<String>,
    caller: Caller,
}

impl AccountsClient {
    /// A client of the replicas at `seeds` (gRPC `host:port`), presenting `credentials`.
    pub fn new(
        seeds: Vec<String>,
        policy: RetryPolicy,
        credentials: Credentials,
    ) -> Result<Self, Status> {
        if seeds.is_empty() {
            return Err(Status::invalid_argument(
                "no account-manager address to call",
            ));
        }
        Ok(Self {
            seeds,
            caller: Caller::new(policy).with_credentials(credentials),
        })
    }

    fn seed(&self, turn: usize) -> Result<String, Status> {
        Ok(self.seeds[turn % self.seeds.len()].clone())
    }
}

/// Forwards unary methods of `$trait` through `$client` on the group's leader.
macro_rules! forward {
    ($trait:ident via $client:ident { $($method:ident($req:ty) -> $resp:ty;)* }
     $(stream $smethod:ident($sreq:ty) -> $stype:ident = $sitem:ty;)?) => {
        #[tonic::async_trait]
        impl $trait for AccountsClient {
            $(type $stype = BoxStream<$sitem>;)?

            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    self.caller
                        .call(
                            METADATA_GROUP,
                            |turn| self.seed(turn),
                            request.into_inner(),
                            |channel, r| async move { $client::new(channel).$method(r).await },
                        )
                        .await
                        .map(Response::new)
                }
            )*

            $(async fn $smethod(
                &self,
                request: Request<$sreq>,
            ) -> Result<Response<Self::$stype>, Status> {
                self.caller
                    .call(
                        METADATA_GROUP,
                        |turn| self.seed(turn),
                        request.into_inner(),
                        |channel, r| async move { $client::new(channel).$smethod(r).await },
                    )
                    .await
                    .map(|stream| Response::new(Box::pin(stream) as BoxStream<$sitem>))
            })?
        }
    };
}

forward! {
    Gateways via GatewaysClient {
        create_gateway(CreateGatewayRequest) -> Gateway;
        list_gateways(ListGatewaysRequest) -> ListGatewaysResponse;
        get_gateway(GatewayRef) -> Gateway;
        update_gateway(UpdateGatewayRequest) -> Gateway;
        delete_gateway(GatewayRef) -> Gateway;
    }
    stream watch_gateways(WatchGatewaysRequest) -> WatchGatewaysStream = GatewayChanges;
}

forward! {
    Cluster via ClusterClient {
        get_shard_map(GetShardMapRequest) -> ShardMapVersion;
        put_shard_map(PutShardMapRequest) -> ShardMapVersion;
    }
    stream watch_shard_map(WatchShardMapRequest) -> WatchShardMapStream = ShardMapVersion;
}

forward! {
    Accounts via AccountsGrpcClient {
        put_plan(Plan) -> Plan;
        list_plans(ListPlansRequest) -> ListPlansResponse;
        create_account(CreateAccountRequest) -> Account;
        get_account(AccountRef) -> AccountInfo;
        set_account_plan(SetAccountPlanRequest) -> Account;
        create_token(CreateTokenRequest) -> CreatedToken;
        revoke_token(TokenRef) -> TokenInfo;
        list_tokens(AccountRef) -> ListTokensResponse;
        report_usage(UsageReport) -> Quota;
        gateway_usage(GatewayRef) -> GatewayUsageResponse;
    }
}
