%%% @doc The four health checks of the gateway worker. ExESDB v0.11's exact reply maps
%%% were not captured; these answer {ok, Map} with the facts a client needs (leader,
%%% members, per-node state) or {error, Reason}.
-module(testbed_health).
-export([check/2]).

check(Check, Store) ->
    case testbed_store:known(Store) of
        false -> {error, {store_not_found, Store}};
        true ->
            case testbed_store:leader_node(Store) of
                undefined -> {error, no_leader};
                Leader -> check(Check, Store, Leader)
            end
    end.

check(quick_health_check, Store, Leader) ->
    {ok, #{store_id => Store, status => healthy, node => node(), leader => Leader,
           timestamp => testbed_rec:datetime(testbed_rec:now_us())}};
check(Check, Store, Leader) ->
    Nodes = [node() | nodes()],
    Replies = lists:zip(Nodes, erpc:multicall(Nodes, testbed_store, status, [Store], 5000)),
    Status = maps:from_list([{N, S} || {N, {ok, S}} <- Replies]),
    Members = lists:sort(maps:keys(Status)),
    case Check of
        verify_cluster_consistency ->
            Counts = maps:map(fun(_, #{events := E}) -> E end, Status),
            Same = length(lists:usort(maps:values(Counts))) =< 1,
            {ok, #{store_id => Store, leader => Leader, members => Members,
                   status => case Same of true -> consistent; false -> inconsistent end,
                   events => Counts}};
        verify_membership_consensus ->
            Views = maps:map(fun(_, #{leader := L}) when is_pid(L) -> node(L);
                                (_, _) -> undefined end, Status),
            Agree = lists:usort(maps:values(Views)) =:= [Leader],
            {ok, #{store_id => Store, leader => Leader, members => Members,
                   consensus => Agree, views => Views}};
        check_raft_log_consistency ->
            Versions = maps:map(fun(_, #{persisted := P}) -> P end, Status),
            Same = length(lists:usort(maps:values(Versions))) =< 1,
            {ok, #{store_id => Store, leader => Leader, members => Members,
                   consistent => Same,
                   log_entries => maps:map(fun(_, #{events := E}) -> E end, Status)}}
    end.
